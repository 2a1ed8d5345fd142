"""Retry policies: who retries, how long to wait, and bad policies in pipeline files."""

from __future__ import annotations

import pytest
from pydantic import ValidationError
from support.pipelines import pipeline_from

from tilemore.errors import PipelineFileError, TilemoreError
from tilemore.retry import RetryPolicy, exception_class


def test_defaults_retry_transient_errors_twice():
    p = RetryPolicy()
    assert p.retries(OSError("reset"), 1) and p.retries(RuntimeError(), 2)
    assert not p.retries(OSError("reset"), 3)
    assert not p.retries(TilemoreError("bad input"), 1)  # the same call fails the same way
    assert not p.retries(KeyboardInterrupt(), 1)


def test_backoff_grows_and_is_capped():
    p = RetryPolicy(backoff_seconds=1, backoff_factor=3, backoff_max_seconds=5)
    assert [p.delay(n) for n in (1, 2, 3, 4)] == [1, 3, 5, 5]


def test_exception_classes_by_builtin_or_dotted_name():
    assert exception_class("MemoryError") is MemoryError
    assert exception_class("tilemore.errors.TilemoreError") is TilemoreError
    p = RetryPolicy(retry_on=("MemoryError", "ConnectionError"))
    assert p.retries(ConnectionResetError(), 1) and not p.retries(ValueError(), 1)


@pytest.mark.parametrize("name, words", [
    ("NoSuchError", "unknown exception class 'NoSuchError'"),
    ("os.path", "not an exception class"),
    ("no_such_module.Error", "unknown exception class"),
    ("len", "'len' is not an exception class"),
    ("tilemore.settings.Settings", "not an exception class"),
])
def test_unknown_exception_classes_are_refused(name, words):
    with pytest.raises(ValidationError, match=words):
        RetryPolicy(retry_on=(name,))


@pytest.mark.parametrize("retry, words", [
    ("{max_retries: -1}", "max_retries"),
    ("{retry_on: [NoSuchError]}", "NoSuchError"),
    ("{retries: 3}", "retries"),
])
def test_bad_policies_in_pipeline_files_name_the_problem(tmp_path, retry, words):
    with pytest.raises(PipelineFileError, match=words):
        pipeline_from(tmp_path, f"""
            stages:
              - {{name: decode, operator: decode}}
              - {{name: encoder, operator: encoder, retry: {retry}}}
        """)


def test_retry_belongs_to_operator_stages(tmp_path):
    with pytest.raises(PipelineFileError, match="put them on branches"):
        pipeline_from(tmp_path, """
            algorithms:
              two:
                branches: {a: {operator: invert}, b: {operator: invert}}
                select: {operator: pick-brightest}
            stages:
              - {name: decode, operator: decode}
              - {name: master, choices: [two], retry: {max_retries: 1}}
              - {name: encoder, operator: encoder}
        """)
