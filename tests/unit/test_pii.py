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
    ("3号楼2单元501室", "unit_number", "3号楼2单元"),
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
    "order number 1234 5678 9012 3456",  # fails Luhn: not a card
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
