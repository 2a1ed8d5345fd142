"""Through the API: branches a selector rules out show as ``skipped`` with the reason, are not
charged, and the hold set aside for them goes back."""

from __future__ import annotations

from decimal import Decimal

from support.images import encode, photo
from support.pipelines import OPERATORS
from support.service_harness import Service


def test_skipped_branches_are_shown_and_not_charged(tmp_path):
    path = tmp_path / "planned.yaml"
    path.write_text(f"""pipeline: planned
operator_modules: ['{OPERATORS}']
algorithms:
  planned:
    branches:
      left: {{operator: spin}}
      right: {{operator: invert}}
    select: {{operator: plan-then-pick}}
stages:
  - {{name: decode, operator: decode}}
  - {{name: master, choices: [planned]}}
  - {{name: encoder, operator: encoder, params: {{format: png}}}}
""")
    svc = Service(tmp_path / "svc", pipeline_paths=[path])
    try:
        for op in ("spin", "invert", "plan-then-pick", "decode", "encoder"):
            svc.ledger.set_price(op, Decimal("1"), Decimal("0"))
        env = {"pipeline": "planned", "adjustments": {"master": {"only": ["right"],
                                                                 "seconds": 0}}}
        answer = svc.submit(encode(photo(64, 48)), env).json()
        done = svc.wait(answer["thread_id"])
        assert done["status"] == "done", done
        tasks = {t["id"]: t for t in done["tasks"]}
        assert tasks["master/left"]["status"] == "skipped"
        assert tasks["master/left"]["reason"] == "not wanted"
        assert done["progress"] == {"done": 4, "total": 4}
        assert done["qc"][0]["skipped"] == {"left": "not wanted"}
        assert Decimal(done["credits_charged"]) == 4  # decode, right, select, encoder
        assert svc.billing.balance("acme").held == 0
    finally:
        svc.close()
