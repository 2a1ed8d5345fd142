"""``tilemore batch`` as a user runs it, on the tests' shared Ray session: folders and S3
prefixes, resume, unreadable files, billing once per image, fatal errors."""

from __future__ import annotations

import io
import json
from decimal import Decimal
from pathlib import Path

import boto3
import pytest
from PIL import Image as PILImage
from support.images import encode, noisy, photo
from support.moto_s3 import moto_s3
from support.pipelines import one_stage

from tilemore.batch import REPORT_NAME
from tilemore.batch.plan import output_name, plan_items
from tilemore.billing.ledger import open_ledger
from tilemore.cli import main
from tilemore.settings import Settings
from tilemore.store import open_store

ADJUSTMENTS = {"master": {"algorithm": "denoised-multiformat"},
               "shifter": {"resize": {"width": 48}}, "encoder": {"quality": 90}}
DENOISED_TASKS = 8  # decode, four denoisers, QC, shifter, encoder


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    path = tmp_path / "data"
    monkeypatch.setenv("TILEMORE_DATA_DIR", str(path))
    return path


def tilemore(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def jpeg(seed: int, width: int = 64, height: int = 48) -> bytes:
    return encode(noisy(photo(width, height), 12, seed=seed), "JPEG", quality=92)


def charges(data_dir: Path, account: str = "demo") -> list:
    with open_ledger(Settings(data_dir=data_dir).db) as ledger:
        return [r for r in ledger.entries(account) if r["kind"] == "charge"]


def balance(data_dir: Path, account: str = "demo") -> Decimal:
    with open_ledger(Settings(data_dir=data_dir).db) as ledger:
        return ledger.balance(account)


def test_folder_to_folder_resumes_without_charging_twice(capsys, tmp_path, data_dir):
    src, dest = tmp_path / "photos", tmp_path / "out"
    (src / "trip").mkdir(parents=True)
    (src / "a.jpg").write_bytes(jpeg(1))
    (src / "trip" / "b.jpg").write_bytes(jpeg(2))
    (src / "trip" / "c.png").write_bytes(encode(noisy(photo(64, 48), 12, seed=3), "PNG"))
    adj = tmp_path / "adj.json"
    adj.write_text(json.dumps(ADJUSTMENTS))

    code, out, err = tilemore(capsys, "batch", str(src), str(dest), "-a", str(adj),
                              "--workers", "2")
    assert code == 0, err
    assert "done 3, already done 0, failed 0 of 3 inputs" in out
    outputs = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*.jpg"))
    assert outputs == ["a.jpg", "trip/b.jpg", "trip/c.jpg"]
    for name in outputs:
        with PILImage.open(dest / name) as im:
            assert (im.format, im.size) == ("JPEG", (48, 36))
    report = json.loads((dest / REPORT_NAME).read_text())
    assert report["counts"] == {"inputs": 3, "done": 3, "already_done": 0, "failed": 0,
                                "not_run": 0}
    assert {d["qc_pick"] for d in report["done"]} <= {"nlmeans", "bilateral", "guided",
                                                      "dncnn"}

    # Billed like API threads: one charge per task, each image its own thread.
    first = charges(data_dir)
    assert len(first) == 3 * DENOISED_TASKS
    assert len({r["thread_id"] for r in first}) == 3
    assert {r["task_id"] for r in first} >= {"decode", "master/dncnn", "master/select"}
    charged = sum(-Decimal(r["amount"]) for r in first)
    assert Decimal(report["credits_charged"]) == charged > 0
    assert balance(data_dir) == Decimal(100) - charged  # the demo domain's demo credits

    # The same operators as `tilemore run`: the same bytes.
    single = tmp_path / "single.jpg"
    code, _, err = tilemore(capsys, "run", str(src / "trip" / "b.jpg"), "-a", str(adj),
                            "-o", str(single))
    assert code == 0, err
    assert (dest / "trip" / "b.jpg").read_bytes() == single.read_bytes()

    # Run again: everything is there, nothing runs, nothing is charged.
    code, out, err = tilemore(capsys, "batch", str(src), str(dest), "-a", str(adj))
    assert code == 0, err
    assert "done 0, already done 3, failed 0 of 3 inputs" in out
    assert len(charges(data_dir)) == len(first)

    # An output lost (or a batch interrupted before writing it): that image runs again,
    # and its tasks, already charged, are not charged again.
    (dest / "trip" / "b.jpg").unlink()
    code, out, err = tilemore(capsys, "batch", str(src), str(dest), "-a", str(adj),
                              "--workers", "1")
    assert code == 0, err
    assert "done 1, already done 2, failed 0 of 3 inputs" in out
    assert (dest / "trip" / "b.jpg").read_bytes() == single.read_bytes()
    assert len(charges(data_dir)) == len(first)
    assert json.loads((dest / REPORT_NAME).read_text())["credits_charged"] == (
        "0.00000000000000000000")


def test_unreadable_files_are_reported_not_fatal(capsys, tmp_path, data_dir):
    src = tmp_path / "photos"
    dest = src / "thumbs"  # inside the source: left out of its listing
    src.mkdir()
    (src / "good1.jpg").write_bytes(jpeg(1))
    (src / "good2.jpg").write_bytes(jpeg(2))
    (src / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    (src / "truncated.jpg").write_bytes(jpeg(3, 256, 192)[:2000])
    (src / "notes.txt").write_text("shopping list")
    (src / "empty.png").write_bytes(b"")
    (src / "gone.jpg").symlink_to(tmp_path / "nowhere.jpg")
    (src / ".hidden.jpg").write_bytes(b"not listed")

    code, out, err = tilemore(capsys, "batch", str(src), str(dest), "-p", "thumbnail",
                              "-f", "png", "--workers", "1")
    assert code == 0, err
    assert "done 2, already done 0, failed 5 of 7 inputs" in out
    assert sorted(p.name for p in dest.iterdir()) == [REPORT_NAME, "good1.png", "good2.png"]
    report = json.loads((dest / REPORT_NAME).read_text())
    reasons = {r["path"]: r["code"] for r in report["skipped"]}
    assert reasons == {"corrupt.jpg": "corrupt_image", "truncated.jpg": "truncated_image",
                       "notes.txt": "corrupt_image", "empty.png": "empty_image",
                       "gone.jpg": "not_found"}
    for name in reasons:
        assert f"skipped {name}: [{reasons[name]}]" in out
    assert {r["task"] for r in report["skipped"] if r["path"] != "gone.jpg"} == {"decode"}
    # A failed decode is not a finished task: only the good images were charged.
    assert len({r["thread_id"] for r in charges(data_dir)}) == 2

    # Again: the outputs are skipped, the bad files are tried (and reported) again, and the
    # destination inside the source is not read as input.
    code, out, err = tilemore(capsys, "batch", str(src), str(dest), "-p", "thumbnail",
                              "-f", "png", "--workers", "1")
    assert code == 0, err
    assert "done 0, already done 2, failed 5 of 7 inputs" in out


def test_operator_failure_and_missing_credits(capsys, tmp_path, data_dir):
    src, dest = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    for i in range(2):
        (src / f"p{i}.jpg").write_bytes(jpeg(i))
    boom = one_stage(tmp_path, "boom", "explode", ", retry: {max_retries: 0}")
    code, out, err = tilemore(capsys, "batch", str(src), str(dest), "--pipeline-file",
                              str(tmp_path / "t.yaml"), "-p", boom.name, "--workers", "1")
    assert code == 0, err
    report = json.loads((dest / REPORT_NAME).read_text())
    assert [(r["code"], r["task"]) for r in report["skipped"]] == [
        ("operator_failed", "boom")] * 2
    assert "ZeroDivisionError: the operator broke" in report["skipped"][0]["reason"]
    # Billed as an API thread is: the finished decode, not the failed task.
    assert sorted(r["task_id"] for r in charges(data_dir)) == ["decode", "decode"]

    # A sub-account without credits: nothing runs, nothing is written or charged.
    with open_store(Settings(data_dir=data_dir).db) as store:
        store.create_subaccount("demo", "broke")
    dest2 = tmp_path / "out2"
    code, out, err = tilemore(capsys, "batch", str(src), str(dest2), "-p", "thumbnail",
                              "--account", "demo/broke", "--workers", "1")
    assert code == 0, err
    report = json.loads((dest2 / REPORT_NAME).read_text())
    assert {r["code"] for r in report["skipped"]} == {"insufficient_credits"}
    assert sorted(p.name for p in dest2.iterdir()) == [REPORT_NAME]
    assert charges(data_dir, "demo/broke") == []


@pytest.mark.parametrize("case", ["no source", "source is a file", "bad json", "not an object",
                                  "unknown stage", "bad format", "same folder",
                                  "unknown account"])
def test_fatal_errors_are_one_line_and_write_nothing(case, capsys, tmp_path, data_dir):
    src, dest = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    (src / "a.jpg").write_bytes(jpeg(1))
    (tmp_path / "list.json").write_text("[1, 2]")
    args = {"no source": [str(tmp_path / "missing"), str(dest)],
            "source is a file": [str(src / "a.jpg"), str(dest)],
            "bad json": [str(src), str(dest), "-a", '{"master": '],
            "not an object": [str(src), str(dest), "-a", str(tmp_path / "list.json")],
            "unknown stage": [str(src), str(dest), "-a", '{"polish": {}}'],
            "bad format": [str(src), str(dest), "-f", "gif"],
            "same folder": [str(src), str(src)],
            "unknown account": [str(src), str(dest), "--account", "nobody"]}[case]
    expected = {"no source": "no such folder", "source is a file": "is a file, not a folder",
                "bad json": "adjustments are not valid JSON",
                "not an object": "adjustments must be a JSON object",
                "unknown stage": "[unknown_stage] adjustments.polish",
                "bad format": "[unsupported_output_format]",
                "same folder": "must not be the source",
                "unknown account": "[unknown_account] no domain 'nobody'"}[case]
    code, out, err = tilemore(capsys, "batch", *args)
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tilemore: ") and expected in lines[0], err
    assert not dest.exists()
    assert sorted(p.name for p in src.iterdir()) == ["a.jpg"]


@pytest.fixture
def s3(monkeypatch):
    with moto_s3(monkeypatch) as endpoint:
        monkeypatch.setenv("TILEMORE_S3_ENDPOINT", endpoint)
        client = boto3.client("s3", endpoint_url=endpoint)
        client.create_bucket(Bucket="photos")
        yield client


def test_s3_prefix_to_s3_prefix(capsys, s3, data_dir):
    s3.put_object(Bucket="photos", Key="in/a.jpg", Body=jpeg(1))
    s3.put_object(Bucket="photos", Key="in/deep/b.jpg", Body=jpeg(2))
    s3.put_object(Bucket="photos", Key="in/broken.jpg", Body=b"\xff\xd8 broken")
    s3.put_object(Bucket="photos", Key="elsewhere/c.jpg", Body=jpeg(3))

    code, out, err = tilemore(capsys, "batch", "s3://photos/in", "s3://photos/out/",
                              "-p", "thumbnail", "-f", "webp", "--workers", "2")
    assert code == 0, err
    assert "done 2, already done 0, failed 1 of 3 inputs" in out
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket="photos",
                                                       Prefix="out/")["Contents"])
    assert keys == [f"out/{REPORT_NAME}", "out/a.webp", "out/deep/b.webp"]
    obj = s3.get_object(Bucket="photos", Key="out/deep/b.webp")
    assert obj["ContentType"] == "image/webp"
    assert PILImage.open(io.BytesIO(obj["Body"].read())).size == (64, 48)
    report = json.loads(s3.get_object(Bucket="photos", Key=f"out/{REPORT_NAME}")["Body"].read())
    assert report["source"] == "s3://photos/in"
    assert [(r["path"], r["code"]) for r in report["skipped"]] == [("broken.jpg",
                                                                     "corrupt_image")]

    code, out, err = tilemore(capsys, "batch", "s3://photos/in", "s3://photos/out",
                              "-p", "thumbnail", "-f", "webp")
    assert code == 0, err
    assert "done 0, already done 2, failed 1 of 3 inputs" in out

    code, out, err = tilemore(capsys, "batch", "s3://no-such-bucket/in", "s3://photos/out")
    assert code == 1 and "cannot reach bucket 'no-such-bucket'" in err


def test_output_names_and_collisions():
    assert output_name("a/b.c.png", "jpeg") == "a/b.c.jpg"
    assert output_name("noext", "webp") == "noext.webp"
    plan = plan_items(["x.png", "x.jpg", "y.tif", REPORT_NAME], {"y.png"}, "png")
    assert [i.name for i in plan.todo] == ["x.jpg"]
    assert [i.name for i in plan.existing] == ["y.tif"]
    assert [(i.name, by) for i, by in plan.collisions] == [("x.png", "x.jpg")]


def test_workers_are_sized_by_the_operators_resources():
    from tilemore.batch.ray_run import blocks, pool_size, worker_resources
    from tilemore.errors import TilemoreError
    from tilemore.operator import Operator, Resources

    class Cpu(Operator):
        name = "cpu"
        resources = Resources(num_cpus=2, custom={"big_node": 0.5})

    class Gpu(Operator):
        name = "gpu"
        resources = Resources(num_cpus=1, num_gpus=1, gpu_optional=True)

    class GpuOnly(Gpu):
        name = "gpu-only"
        resources = Resources(num_gpus=0.5)

    res = worker_resources([Cpu, Gpu], {"CPU": 16})  # no GPU: the CNN's CPU fallback
    assert (res.num_cpus, res.num_gpus, res.custom) == (2, 0, {"big_node": 0.5})
    assert pool_size(res, {"CPU": 15, "big_node": 4}, items=100) == 7
    assert pool_size(res, {"CPU": 15, "big_node": 1}, items=100) == 2
    assert pool_size(res, {"CPU": 16, "big_node": 8}, items=3) == 3
    assert pool_size(res, {"CPU": 0}, items=3) == 1  # waits for a CPU rather than failing
    with_gpu = worker_resources([Cpu, Gpu], {"CPU": 16, "GPU": 2})
    assert with_gpu.num_gpus == 1
    assert pool_size(with_gpu, {"CPU": 16, "GPU": 2, "big_node": 8}, items=100) == 2
    with pytest.raises(TilemoreError, match="needs a GPU"):
        worker_resources([GpuOnly], {"CPU": 16})
    # Several small images per Ray Data task, but enough tasks to keep every worker busy.
    assert blocks(10, 2) == 10
    assert blocks(200, 2) == 34  # 6 images a block
    assert blocks(100_000, 16) == 12_500  # at most 8 a block


def _block(tmp_path, files: dict[str, bytes], credits: str, pipeline: str = "thumbnail"):
    """One worker given all of ``files`` as one block, in this process (no Ray)."""
    from tilemore.batch import BatchJob, prepare
    from tilemore.batch.charges import BatchBilling
    from tilemore.batch.worker import ImageWorker
    from tilemore.billing.ledger import Entry

    settings = Settings(data_dir=tmp_path / "data")
    with open_store(settings.db) as store:
        store.create_domain("shop")
    with open_ledger(settings.db) as ledger:
        ledger.append([Entry("shop", "order", Decimal(credits), reference="o1")])
    for name, data in files.items():
        (tmp_path / "in" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "in" / name).write_bytes(data)
    prepared = prepare(BatchJob(str(tmp_path / "in"), str(tmp_path / "out"), pipeline=pipeline,
                                account="shop"), settings)
    billing = BatchBilling(settings)
    try:
        return ImageWorker(prepared.spec, billing).process(prepared.plan.todo)
    finally:
        billing.close()


def test_one_block_of_images_is_billed_image_by_image(tmp_path):
    """A worker given several images at once (a large batch's blocks): each is reserved,
    run, charged and written on its own merits, in one round trip to billing each way."""
    # Credits for one thumbnail's estimate, not two.
    outcomes = _block(tmp_path, {"a.jpg": jpeg(1), "b.jpg": jpeg(2), "c.jpg": b"not an image"},
                      "0.0005")
    assert [(o.name, o.status, o.code) for o in outcomes] == [
        ("a.jpg", "done", ""), ("b.jpg", "failed", "insufficient_credits"),
        ("c.jpg", "failed", "corrupt_image")]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.jpg"]
    billed = charges(tmp_path / "data", "shop")
    assert {r["thread_id"] for r in billed} == {outcomes[0].thread_id}
    assert sum(-Decimal(r["amount"]) for r in billed) == Decimal(outcomes[0].credits) > 0
    with open_ledger(Settings(data_dir=tmp_path / "data").db) as ledger:
        assert ledger.held("shop") == 0  # every reservation released


def test_an_output_that_cannot_be_written_fails_that_image_only(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "sub").write_text("a file where a folder should be")
    outcomes = _block(tmp_path, {"a.jpg": jpeg(1), "sub/b.jpg": jpeg(2)}, "1")
    assert [(o.name, o.status, o.code) for o in outcomes] == [
        ("a.jpg", "done", ""), ("sub/b.jpg", "failed", "write_failed")]
    assert "cannot write" in outcomes[1].reason
    assert Decimal(outcomes[1].credits) > 0  # charged: a re-run writes it, free
