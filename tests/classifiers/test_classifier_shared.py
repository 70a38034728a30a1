"""The shared data sets and the models shipped in models/ (shared tests skip without it)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from classifiers.data import data_sha256, load_csv
from classifiers.model import load_model

REPO = Path(__file__).resolve().parents[2]
ENDAVA = "data/endava_it_tickets_en/train.csv"
TIPDM = "data/tipdm2020c_gov_messages_zh/train.csv"


def test_shared_files_load(shared: Path) -> None:
    endava = load_csv(shared / ENDAVA)
    tipdm = load_csv(shared / TIPDM)
    assert len(endava) == 3801
    assert all(row.department and row.urgency for row in endava)
    assert len(tipdm) == 346
    assert all(row.department and row.urgency is None for row in tipdm)


@pytest.mark.parametrize(("name", "source"), [("endava-en", ENDAVA), ("tipdm-zh", TIPDM)])
def test_shipped_models_were_trained_on_the_shared_files(
    shared: Path, name: str, source: str
) -> None:
    base = REPO / "models" / name
    if not base.with_suffix(".json").exists():
        pytest.skip(f"{base} not built")
    model = load_model(base)
    path = shared / source
    assert model.metadata["training"]["sources"] == {source: data_sha256([path])}
    assert "cross_validation" in model.metadata


def test_default_model_routes_obvious_messages() -> None:
    base = REPO / "models" / "default"
    if not base.with_suffix(".json").exists():
        pytest.skip("models/default not built")
    model = load_model(base)
    assert model.labels["department"] == (
        "billing", "complaints", "general", "returns", "sales", "technical_support",
    )  # fmt: skip
    assert set(model.labels["urgency"]) == {
        "suggestion", "normal", "special_problem", "important", "emergency",
    }  # fmt: skip
    cases = [
        ("Charged twice", "You charged my card twice for invoice INV-2024-12345.", "billing"),
        ("Login fails", "Since the update I cannot log in, error 403.", "technical_support"),
        ("退货", "收到的耳机有破损，想申请退货退款。", "returns"),
        ("报价", "我们公司有50个人，想采购企业版，请帮忙报个价。", "sales"),
    ]
    for subject, body, department in cases:
        assert model.predict(subject, body).department == department, subject
    urgent = model.predict("紧急：系统宕机", "生产系统全部宕机，所有用户都没法工作，请立刻处理！")
    assert urgent.urgency == "emergency"


def test_classifiers_never_import_daemon() -> None:
    for path in (REPO / "classifiers").rglob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            assert not any(n == "daemon" or n.startswith("daemon.") for n in names), path
