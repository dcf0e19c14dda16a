"""PII detection and redaction: recall and precision cases, English and Chinese."""

from __future__ import annotations

import pytest

from dialinsight_core.pii import Redactor, find_pii


@pytest.mark.parametrize(("text", "kind", "span"), [
    ("call 138 1234 5678 today", "phone", "138 1234 5678"),
    ("手机：+86 139-1234-5678。", "phone", "+86 139-1234-5678"),
    ("座机010-12345678", "phone", "010-12345678"),
    ("office (415) 555-2671", "phone", "(415) 555-2671"),
    ("intl +44 20 7946 0958 ok", "phone", "+44 20 7946 0958"),
    ("身份证11010519491231002X", "id_number", "11010519491231002X"),
    ("mail li.wei@example.com.", "email", "li.wei@example.com"),
    ("card 4111 1111 1111 1111", "bank_card", "4111 1111 1111 1111"),
    ("银行卡6222020200112233445", "bank_card", None),  # 19 digits, Luhn decides
    ("I live at 12 Maple Street", "street_address", "12 Maple Street"),
    ("住在南京路100号", "street_address", "南京路100号"),
    ("the flat is unit 12B", "unit_number", "unit 12B"),
    ("3号楼2单元501室", "unit_number", "3号楼2单元501室"),
    ("my order number is ORD-88231457", "account_id", "ORD-88231457"),
    ("order number 1234 5678 9012 3456", "account_id", "1234 5678 9012 3456"),  # fails Luhn, but it is named an order number
    ("username: jsmith_88", "username", "jsmith_88"),
    ("我的微信号lucky2024，月租4500元", "username", "lucky2024"),
    ("订单号DD202409220001，退款299元", "account_id", "DD202409220001"),
    ("手机１３８１２３４５６７８", "phone", "１３８１２３４５６７８"),  # full-width digits, original span
])
def test_recall(text, kind, span):
    found = find_pii(text)
    if span is None:
        assert all(m.type in {kind, "phone"} for m in found)
    else:
        assert (kind, span) in [(m.type, m.text) for m in found]


@pytest.mark.parametrize("text", [
    "Rent is $1,200 per month, 89 m2, floor 15, available 2024-05-03 at 3pm.",
    "两室一厅，89㎡，12楼，月租4500元，2024年5月3日起租，总价350万。",
    "3室1厅1卫，第5层，共18层，单价65000元/平米。",
    "budget 3500-4000, 2 bedroom apartment, 1.5万押金",
    "ID 110105194912310021 has a wrong checksum",  # not a valid resident ID
    "1234 5678 9012 3456 is not a card",  # fails Luhn and nothing names it a card
    '{"observed": 0.2631578947368421, "min_value": 0.5}',  # a float's 16 digits (Luhn-valid) are no card
    "我想打出租车去看房，王府井附近，月租4500元，3室1厅，第5层。",
    "Maple Court on Grant Street has 2 bedrooms in May for $1,200.",
])
def test_precision_domain_facts_are_not_pii(text):
    assert find_pii(text) == []


def test_redaction_is_typed_consistent_and_counted():
    turns = ["Hi, my name is Ben Smith. Call me on 138 1234 5678 or ben@example.com.",
             "Thanks Ben. The flat is $1,200 per month on floor 5.",
             "My number again: 138-1234-5678. My wife's is 139 8765 4321."]
    r = Redactor()
    r.learn_names(turns)
    out = [r(t) for t in turns]
    assert out[0] == "Hi, my name is [NAME_1]. Call me on [PHONE_1] or [EMAIL_1]."
    assert out[1] == "Thanks [NAME_1]. The flat is $1,200 per month on floor 5."  # facts survive
    assert out[2] == "My number again: [PHONE_1]. My wife's is [PHONE_2]."  # same number, same placeholder
    assert r.counts == {"NAME": 2, "PHONE": 3, "EMAIL": 1}


def test_redaction_chinese_and_bare_name_answers():
    turns = ["请问您怎么称呼？", "王小明", "王小明先生，您的电话是多少？", "13912345678，住在3号楼2单元501室",
             "好的，两室一厅89㎡，月租4500元，5楼。"]
    r = Redactor()
    r.learn_names(turns)
    out = [r(t) for t in turns]
    assert out[1] == "[NAME_1]" and out[2].startswith("[NAME_1]")
    assert "[PHONE_1]" in out[3] and "501" not in out[3]
    assert out[4] == turns[4]
    en = Redactor()
    en.learn_names(["Could you give me your name, please?", "Mark", "What apartment?", "Shadyside"])
    assert en("Mark") == "[NAME_1]" and en("Shadyside") == "Shadyside"  # only the answer to "your name"


# --- issue 13 findings: each failed before (see the labelled set for the figures) -------------------------------

def _redact(*turns: str) -> list[str]:
    r = Redactor()
    r.learn_names(list(turns))
    return [r(t) for t in turns]


@pytest.mark.parametrize(("text", "name"), [
    ("您好，我是经纪人黄芳，有什么可以帮您？", "黄芳"),  # self-introduction with a role
    ("这边是客服小刘，请问有什么问题", "小刘"),
    ("我同事杜秀英明天带您去看房。", "杜秀英"),
    ("程欣怡，你那边方便吗？", "程欣怡"),  # vocative at the start
    ("好的，谢谢王芳。", "王芳"),  # vocative at the end
    ("——金平（置业顾问）", "金平"),  # signature
    ("Hannah, do you still want the viewing?", "Hannah"),
    ("Our agent, Priya, can show it.", "Priya"),
    ("Best,\nMichael", "Michael"),
    ("The booking is under Jessica Young.", "Jessica Young"),
])
def test_names_in_any_position_are_redacted(text, name):
    assert name not in _redact(text)[0]


def test_titles_are_kept_and_words_that_look_like_names_are_not_names():
    out = _redact("王先生您好，张经理说可以。", "我和先生一起来看房，王府井附近，这张卡是我的。")
    assert out[0] == "[NAME_1]先生您好，[NAME_2]经理说可以。"
    assert out[1] == "我和先生一起来看房，王府井附近，这张卡是我的。"


def test_card_numbers_named_as_such_are_redacted_whatever_their_checksum():
    text = "卡号6222 0202 0011 2233 449，退款299元"  # a 19-digit number that fails Luhn
    found = find_pii(text)
    assert [(m.type, m.text) for m in found] == [("bank_card", "6222 0202 0011 2233 449")]
    assert found[0].confidence < 1.0  # Luhn is a confidence signal, not a gate
    assert _redact(text)[0] == "卡号[BANK_CARD_1]，退款299元"


@pytest.mark.parametrize(("text", "expected"), [
    ("地址在北京市朝阳区建国门外大街88号，月租4500元", "地址在[ADDRESS_1]，月租4500元"),
    ("地址是西湖区文三路12号3栋2单元501室。", "地址是[ADDRESS_1]。"),
    ("我住在南京路100号", "我住在[ADDRESS_1]"),
])
def test_chinese_address_spans_neither_cut_nor_swallow_neighbouring_words(text, expected):
    assert _redact(text)[0] == expected


def test_source_id_patterns_are_redacted_first():
    from dialinsight_core.pii import compile_patterns

    r = Redactor(compile_patterns({"account_id": r"客户编号\s*([A-Z]{2}\d{6})", "username": r"\bu/[a-z0-9_]+"}))
    assert r("客户编号 KH123456，u/zhang_wei 来看房") == "客户编号 [ACCOUNT_1]，[USERNAME_1] 来看房"


def test_config_pii_kinds_are_the_redactor_types():
    from typing import get_args

    from dialinsight_core.config import PiiKind
    from dialinsight_core.pii import PLACEHOLDER_TYPES

    assert set(get_args(PiiKind)) == set(PLACEHOLDER_TYPES)
