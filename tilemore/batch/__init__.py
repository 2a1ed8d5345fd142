"""Batch mode: a folder or an S3 prefix through a pipeline with Ray Data, resumable, billed
per operation like API runs, with a report of every file that could not be processed.

``prepare`` (no Ray: validate, list, plan) → ``run`` (Ray Data; the report is written at the
destination). Modules: ``locations`` (folders) and ``s3`` (prefixes), ``plan`` (names, resume,
keys), ``worker`` (images, no Ray), ``charges`` (billing), ``report``, ``job`` (the two phases),
``ray_run`` (the only one with Ray).
"""

from tilemore.batch.job import BatchJob, Prepared, prepare, run
from tilemore.batch.locations import LocationError
from tilemore.batch.plan import REPORT_NAME
from tilemore.batch.report import BatchReport
from tilemore.batch.worker import Outcome

__all__ = ["REPORT_NAME", "BatchJob", "BatchReport", "LocationError", "Outcome", "Prepared",
           "prepare", "run"]
