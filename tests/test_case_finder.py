"""A question that names a court case finds it by what belongs to that case alone (its number,
its parties, its town), and a general question that merely mentions a court finds none."""

from __future__ import annotations

import pytest

from bot.config import Settings
from bot.engine import Engine
from bot.matching.cases import CaseFinder
from bot.matching.normalise import Preparer
from bot.runtime import load


@pytest.fixture(scope="module")
def finder() -> CaseFinder:
    content = load(Settings())
    return Engine.case_finder_for(content, Preparer(content.lexicon).normalize)


@pytest.mark.parametrize(
    ("message", "case_id"),
    [
        ("指导性案例193号", "spc_guiding_193_id_card_photos"),
        ("柯某案", "spp_140_property_listings"),
        ("人脸识别第一案", "hangzhou_face_recognition_zoo"),
        ("智慧停车场案", "spp_2026_smart_parking_xushui"),
    ],
)
def test_a_case_is_found_by_its_own_names(finder: CaseFinder, message: str, case_id: str) -> None:
    assert finder.find(message) == case_id


@pytest.mark.parametrize(
    "message",
    [
        "侵犯公民个人信息罪判几年",
        "被骗了怎么报案",
        "交通事故对方不赔钱怎么起诉",
        "人脸识别的案子",  # two cases are about faces: which one is not said
        "有哪些典型案例",
    ],
)
def test_a_general_question_names_no_case(finder: CaseFinder, message: str) -> None:
    assert finder.find(message) is None


def test_words_shared_by_two_cases_name_neither() -> None:
    finder = CaseFinder(
        names={"a": ["健身房刷脸案"], "b": ["动物园刷脸案"]},
        articles={"a": ["无锡的健身房"], "b": ["杭州的动物园"]},
        background=["刷脸安全吗"],
        normalize=str,
    )
    assert finder.find("刷脸那个案子") is None
    assert finder.find("健身房那个案子") == "a"
    assert finder.find("杭州动物园的案子") == "b"
