# ruff: noqa: E501 - dialogue and answer templates are data: one line per turn reads best
"""Build the labelled clean / defective answer set (zh + en) kept in ``tests/fixtures/quality_labelled/``.

Dialogues (already redacted, as ingest hands them on) come from slot templates in three domains
(rental, hotel, after-sales), each with seeded values, so every fact an answer states is known.
For every dialogue and task family there is a *clean* answer a careful annotator would accept (for
Chinese extraction, one with Chinese field names and one with English schema-style names), and
from each clean answer one answer per *defect* kind: hallucinated fact, PII leak, wrong language,
refusal, truncation (half with finish_reason "stop"), empty, repetition, copy of the dialogue,
instruction ignored (another task's answer in this task's shape), invalid JSON.

``python benchmarks/quality_set.py`` writes ``dialogues.jsonl`` and ``labels.jsonl``.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.jsonl import write_jsonl

OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "quality_labelled"
PER_DOMAIN = 20
INSTRUCTIONS = {"zh": {"information_extraction": "ie-004", "summarisation": "su-004", "dialogue_generation": "dg-003",
                       "data_analysis": "da-004"},
                "en": {"information_extraction": "ie-001", "summarisation": "su-001", "dialogue_generation": "dg-001",
                       "data_analysis": "da-002"}}
DEFECTS = ("hallucinated_fact", "pii_leak", "wrong_language", "refusal", "truncated", "empty", "repetition", "copy",
           "instruction_ignored", "invalid_json")


def slots(domain: str, r: random.Random) -> dict:
    if domain == "rental":
        rent = r.randrange(3000, 9000, 100)
        return {"area_zh": r.choice(["朝阳区", "浦东", "西湖区", "天河区", "南山区", "武侯区"]),
                "area_en": r.choice(["Shadyside", "Midtown", "the Riverside district", "Oakland", "Downtown", "Greenfield"]),
                "estate_zh": r.choice(["阳光花园", "翠湖苑", "金地名郡", "锦绣家园", "滨江公寓", "万科城"]),
                "estate_en": r.choice(["Maple Court", "Riverside Lofts", "Cedar House", "Parkview Apartments", "Elm Gardens"]),
                "rooms": r.choice([1, 2, 3]), "size": r.choice([45, 56, 72, 89, 105, 120]), "floor": r.randint(2, 28),
                "rent": rent, "budget": rent + r.choice([-300, 0, 200, 500]), "amenity_zh": r.choice(["阳台", "电梯", "车位", "地铁"]),
                "amenity_en": r.choice(["a balcony", "an elevator", "parking", "a gym"]),
                "day_zh": r.choice(["周六", "周日", "周三", "明天"]), "day_en": r.choice(["Saturday", "Sunday", "Wednesday", "Friday"]),
                "hour": r.choice([10, 15, 19])}
    if domain == "hotel":
        price = r.randrange(380, 1280, 20)
        return {"room_zh": r.choice(["大床房", "双床房", "行政套房", "亲子房"]), "room_en": r.choice(["king room", "twin room", "suite", "family room"]),
                "nights": r.randint(2, 5), "price": price, "discounted": int(price * 0.9), "breakfast": r.choice([1, 2]),
                "date_m": r.randint(1, 12), "date_d": r.randint(1, 28)}
    return {"product_zh": r.choice(["洗衣机", "空调", "扫地机器人", "电视", "冰箱"]), "product_en": r.choice(["washing machine", "air conditioner", "robot vacuum", "TV", "fridge"]),
            "fault_zh": r.choice(["不转了", "不制冷", "充不上电", "屏幕不亮", "漏水"]), "fault_en": r.choice(["stopped spinning", "stopped cooling", "won't charge", "has a black screen", "is leaking"]),
            "price": r.randrange(999, 6999, 100), "warranty": r.choice([1, 2, 3]), "days": r.choice([7, 15]), "ship": r.choice([2, 3, 5]),
            "date_m": r.randint(1, 12), "date_d": r.randint(1, 28)}


def zh_hour(h: int) -> str:
    return {10: "上午十点", 15: "下午三点", 19: "晚上七点"}[h]


def en_hour(h: int) -> str:
    return {10: "10am", 15: "3pm", 19: "7pm"}[h]


def dialogue(domain: str, lang: str, s: dict) -> list[tuple[str, str]]:
    if lang == "zh":
        rooms = "一室一厅两室一厅三室两厅".split("厅")[s.get("rooms", 1) - 1] + "厅" if domain == "rental" else ""
        s["rooms_zh"] = rooms
        if domain == "rental":
            return [("customer", f"您好，我想在{s['area_zh']}租一套{rooms}，预算每月{s['budget']}元左右。"),
                    ("agent", f"您好！{s['estate_zh']}有一套{rooms}，{s['size']}平米，在{s['floor']}楼，月租{s['rent']}元，带{s['amenity_zh']}。"),
                    ("customer", f"听起来不错，{s['day_zh']}可以去看看吗？"),
                    ("agent", f"可以，我帮您约{s['day_zh']}{zh_hour(s['hour'])}看房。"),
                    ("customer", "好的，押金怎么算？")]
        if domain == "hotel":
            return [("customer", f"你好，我想订{s['date_m']}月{s['date_d']}日入住的{s['room_zh']}，住{s['nights']}晚。"),
                    ("agent", f"您好，那天还有{s['room_zh']}，每晚{s['price']}元，含{s['breakfast']}份早餐。"),
                    ("customer", "能不能便宜一点？"),
                    ("agent", f"连住{s['nights']}晚可以打九折，每晚{s['discounted']}元。"),
                    ("customer", "好的，那就订吧，几点可以入住？")]
        return [("customer", f"你好，我{s['date_m']}月{s['date_d']}日买的{s['product_zh']}{s['fault_zh']}。"),
                ("agent", "您好，很抱歉给您带来不便。请问购买价格是多少？"),
                ("customer", f"花了{s['price']}元。"),
                ("agent", f"还在{s['warranty']}年保修期内，可以免费维修，也可以在{s['days']}天内换新。"),
                ("customer", "那我选换新吧，多久能到？")]
    if domain == "rental":
        return [("customer", f"Hi, I'm looking for a {s['rooms']}-bedroom apartment in {s['area_en']}, my budget is about ${s['budget']} a month."),
                ("agent", f"Hello! {s['estate_en']} has a {s['rooms']}-bedroom unit of {s['size']} square meters on floor {s['floor']} for ${s['rent']} a month, with {s['amenity_en']}."),
                ("customer", f"Sounds good. Could I see it on {s['day_en']}?"),
                ("agent", f"Sure, I've booked a viewing for {s['day_en']} at {en_hour(s['hour'])}."),
                ("customer", "Great. How does the deposit work?")]
    if domain == "hotel":
        return [("customer", f"Hello, I'd like to book a {s['room_en']} from {month(s['date_m'])} {s['date_d']} for {s['nights']} nights."),
                ("agent", f"Good afternoon, we have a {s['room_en']} available at ${s['price']} per night, with {s['breakfast']} breakfast{'s' if s['breakfast'] > 1 else ''} included."),
                ("customer", "Is there any discount?"),
                ("agent", f"For {s['nights']} nights we can give you 10% off, so ${s['discounted']} per night."),
                ("customer", "Perfect, please book it. What time is check-in?")]
    return [("customer", f"Hi, the {s['product_en']} I bought on {month(s['date_m'])} {s['date_d']} {s['fault_en']}."),
            ("agent", "I'm sorry to hear that. How much did you pay for it?"),
            ("customer", f"It was ${s['price']}."),
            ("agent", f"It is still under the {s['warranty']}-year warranty, so we can repair it for free or replace it within {s['days']} days."),
            ("customer", "I'd like a replacement. How long will it take?")]


def month(m: int) -> str:
    return ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October", "November",
            "December"][m - 1]


def clean_answers(domain: str, lang: str, s: dict) -> dict[str, list[dict]]:
    """Per family, the clean answers (zh extraction: Chinese and English field names)."""
    if lang == "zh":
        if domain == "rental":
            ie = [("户型", s["rooms_zh"]), ("预算", f"每月{s['budget']}元左右"), ("位置", s["area_zh"])]
            ie_en = [("layout", s["rooms_zh"]), ("budget", f"每月{s['budget']}元左右"), ("location", s["area_zh"])]
            su = {"summary": f"客户想在{s['area_zh']}租一套{s['rooms_zh']}，预算每月约{s['budget']}元。经纪人推荐了{s['estate_zh']}一套{s['size']}平米、月租{s['rent']}元的房子，并约好{s['day_zh']}{zh_hour(s['hour'])}看房。",
                  "key_points": [f"预算每月约{s['budget']}元", f"{s['estate_zh']}月租{s['rent']}元", f"{s['day_zh']}{zh_hour(s['hour'])}看房"]}
            dg = {"reply": f"押金一般是一个月的租金，也就是{s['rent']}元。{s['day_zh']}{zh_hour(s['hour'])}我在{s['estate_zh']}门口等您，具体可以看房时再详细说明。"}
            da = {"findings": [f"经纪人很快推荐了符合需求的{s['rooms_zh']}", f"主动约好了{s['day_zh']}{zh_hour(s['hour'])}看房", "对客户的问题回应及时"],
                  "conclusion": "经纪人服务专业、回应及时，基本满足了客户的需求。", "rating": 4}
        elif domain == "hotel":
            ie = [("房型", s["room_zh"]), ("入住日期", f"{s['date_m']}月{s['date_d']}日"), ("入住晚数", f"{s['nights']}晚"), ("价格要求", "希望便宜一点")]
            ie_en = [("room_type", s["room_zh"]), ("check_in_date", f"{s['date_m']}月{s['date_d']}日"), ("nights", f"{s['nights']}晚"), ("price_request", "希望便宜一点")]
            su = {"summary": f"客户想预订{s['date_m']}月{s['date_d']}日入住的{s['room_zh']}，住{s['nights']}晚。前台报价每晚{s['price']}元，连住打九折后每晚{s['discounted']}元，客户决定预订。",
                  "key_points": [f"{s['room_zh']}每晚{s['price']}元", f"九折后每晚{s['discounted']}元", "客户确认预订"]}
            dg = {"reply": f"好的，已经为您订好{s['date_m']}月{s['date_d']}日的{s['room_zh']}。具体入住时间我马上帮您确认，稍后通知您。"}
            da = {"findings": [f"前台清楚说明了{s['room_zh']}的价格和早餐", "主动给出了连住折扣", "回应客户的议价请求"],
                  "conclusion": "前台服务周到，报价清楚，成功促成了预订。", "rating": 5}
        else:
            ie = [("产品", s["product_zh"]), ("问题", s["fault_zh"]), ("购买日期", f"{s['date_m']}月{s['date_d']}日"), ("诉求", "换新")]
            ie_en = [("product", s["product_zh"]), ("issue", s["fault_zh"]), ("purchase_date", f"{s['date_m']}月{s['date_d']}日"), ("request", "换新")]
            su = {"summary": f"客户{s['date_m']}月{s['date_d']}日购买的{s['product_zh']}{s['fault_zh']}，价格{s['price']}元。客服确认仍在{s['warranty']}年保修期内，客户选择了换新。",
                  "key_points": [f"{s['product_zh']}{s['fault_zh']}", f"{s['warranty']}年保修期内", "客户选择换新"]}
            dg = {"reply": f"好的，我们马上为您安排换新{s['product_zh']}，发货后会通知您具体到货时间，旧机会安排上门取走。"}
            da = {"findings": ["客服先向客户致歉", "确认了购买价格和保修状态", f"给出了维修或{s['days']}天内换新两种方案"],
                  "conclusion": "客服处理规范，方案清楚，客户问题得到了解决。", "rating": 4}
        return {"information_extraction": [{"fields": [{"name": k, "value": v} for k, v in ie]},
                                           {"fields": [{"name": k, "value": v} for k, v in ie_en]}],
                "summarisation": [su], "dialogue_generation": [dg], "data_analysis": [da]}
    if domain == "rental":
        ie = [("bedrooms", str(s["rooms"])), ("location", s["area_en"]), ("budget", f"about ${s['budget']} a month")]
        su = {"summary": f"The customer wanted a {s['rooms']}-bedroom apartment in {s['area_en']} for about ${s['budget']} a month. The agent offered a {s['size']} square meter unit at {s['estate_en']} for ${s['rent']} and booked a viewing for {s['day_en']} at {en_hour(s['hour'])}.",
              "key_points": [f"budget about ${s['budget']} a month", f"{s['estate_en']} at ${s['rent']} a month", f"viewing on {s['day_en']} at {en_hour(s['hour'])}"]}
        dg = {"reply": f"The deposit is usually one month's rent, so ${s['rent']}. I'll meet you at {s['estate_en']} on {s['day_en']} at {en_hour(s['hour'])} and we can go through the details then."}
        da = {"findings": ["The agent quickly offered a unit that matched the request", f"The agent booked the viewing for {s['day_en']} right away", "Answers were prompt and clear"],
              "conclusion": "The agent was responsive and professional and met the customer's main needs.", "rating": 4}
    elif domain == "hotel":
        ie = [("room type", s["room_en"]), ("arrival", f"{month(s['date_m'])} {s['date_d']}"), ("nights", str(s["nights"])), ("price", "asked for a discount")]
        su = {"summary": f"The customer wanted a {s['room_en']} from {month(s['date_m'])} {s['date_d']} for {s['nights']} nights. The hotel quoted ${s['price']} per night and offered 10% off, ${s['discounted']} per night, and the customer booked it.",
              "key_points": [f"{s['room_en']} at ${s['price']} per night", f"${s['discounted']} per night after the discount", "the customer booked"]}
        dg = {"reply": f"Your {s['room_en']} from {month(s['date_m'])} {s['date_d']} is booked. Let me check the exact check-in time for you and get back to you shortly."}
        da = {"findings": [f"The agent explained the {s['room_en']} price and breakfast clearly", "The agent offered a discount for the longer stay", "The request was handled quickly"],
              "conclusion": "The service was friendly and clear and ended in a booking.", "rating": 5}
    else:
        ie = [("product", s["product_en"]), ("problem", s["fault_en"]), ("purchase date", f"{month(s['date_m'])} {s['date_d']}"), ("request", "replacement")]
        su = {"summary": f"The customer's {s['product_en']}, bought on {month(s['date_m'])} {s['date_d']} for ${s['price']}, {s['fault_en']}. The agent confirmed the {s['warranty']}-year warranty and the customer chose a replacement.",
              "key_points": [f"the {s['product_en']} {s['fault_en']}", f"still under the {s['warranty']}-year warranty", "the customer chose a replacement"]}
        dg = {"reply": f"We'll arrange the replacement {s['product_en']} right away and let you know the delivery date once it ships. We'll collect the old one then."}
        da = {"findings": ["The agent apologised first", "The agent checked the price and the warranty", f"The agent offered a repair or a replacement within {s['days']} days"],
              "conclusion": "The agent handled the complaint well and gave clear options.", "rating": 4}
    return {"information_extraction": [{"fields": [{"name": k, "value": v} for k, v in ie]}], "summarisation": [su],
            "dialogue_generation": [dg], "data_analysis": [da]}


def _strings(obj, fn, min_len: int = 6):
    """Apply fn to the first string value of a JSON answer at least ``min_len`` long (the prose a
    defect goes into; field names are left alone)."""
    done = [False]

    def walk(v):
        if isinstance(v, str) and not done[0] and len(v) >= min_len:
            done[0] = True
            return fn(v)
        if isinstance(v, list):
            return [walk(x) for x in v]
        if isinstance(v, dict):
            return {k: walk(x) if k != "name" else x for k, x in v.items()}
        return v
    return walk(obj)


def defect(kind: str, fam: str, lang: str, answer: dict, other_lang_answer: dict, other_family: dict, turns, r: random.Random):
    """(output_text, finish_reason) of the defective answer of ``kind`` made from a clean one."""
    text = json.dumps(answer, ensure_ascii=False)
    if kind == "hallucinated_fact":
        n = r.randrange(101, 999)
        add = f"，另外物业费每月{n}元" if lang == "zh" else f", and the service fee is ${n} a month"
        if fam == "information_extraction":
            bad = {"fields": [*answer["fields"], {"name": "物业费" if lang == "zh" else "service fee", "value": f"每月{n}元" if lang == "zh" else f"${n} a month"}]}
        else:
            bad = _strings(answer, lambda v: v.rstrip("。.") + add + ("。" if lang == "zh" else "."))
        return json.dumps(bad, ensure_ascii=False), "stop"
    if kind == "pii_leak":
        phone = f"1{r.choice('3589')}{r.randint(100000000, 999999999)}" if lang == "zh" else f"({r.randint(201, 989)}) 555-{r.randint(1000, 9999)}"
        add = f"，联系电话{phone}" if lang == "zh" else f", call {phone}"
        if fam == "information_extraction":
            bad = {"fields": [*answer["fields"], {"name": "电话" if lang == "zh" else "phone", "value": phone}]}
        else:
            bad = _strings(answer, lambda v: v.rstrip("。.") + add + ("。" if lang == "zh" else "."))
        return json.dumps(bad, ensure_ascii=False), "stop"
    if kind == "wrong_language":
        return json.dumps(other_lang_answer, ensure_ascii=False), "stop"
    if kind == "refusal":
        msg = "抱歉，作为一个AI语言模型，我无法完成这个任务。" if lang == "zh" else "I'm sorry, but as an AI language model I cannot help with that request."
        if fam == "information_extraction":
            return json.dumps({"fields": [{"name": "说明" if lang == "zh" else "note", "value": msg}]}, ensure_ascii=False), "stop"
        return json.dumps(_strings(answer, lambda v: msg), ensure_ascii=False), "stop"
    if kind == "truncated":
        prose = {"summarisation": "summary", "dialogue_generation": "reply", "data_analysis": "conclusion"}.get(fam)
        if prose is None or r.random() < 0.5:  # the raw output cut at a third (the JSON left open)
            return text[: max(1, len(text) // 3)], r.choice(["stop", "length"])
        # the main prose field cut at a third, the JSON closed (a proxy that repairs what it cut)
        return json.dumps({**answer, prose: answer[prose][: max(2, len(answer[prose]) // 3)]}, ensure_ascii=False), "stop"
    if kind == "empty":
        return r.choice(["", "{}", " "]), "stop"
    if kind == "repetition":
        return json.dumps(_strings(answer, lambda v: (v + " ") * 8 if lang == "en" else v * 8, min_len=1), ensure_ascii=False), "stop"
    if kind == "copy":
        pasted = "\n".join(t for _, t in turns)
        if fam == "information_extraction":
            bad = {"fields": [{"name": "对话" if lang == "zh" else "dialogue", "value": pasted[:158]}]}
        else:
            bad = _strings(answer, lambda v: pasted)
        return json.dumps(bad, ensure_ascii=False), "stop"
    if kind == "instruction_ignored":
        return json.dumps(other_family, ensure_ascii=False), "stop"
    if kind == "invalid_json":
        return text.replace('"', "", 2).rstrip("}") + ("。" if lang == "zh" else "."), "stop"
    raise ValueError(kind)


# the answer of another task forced into this family's shape ("instruction ignored")
def ignored(fam: str, answers: dict[str, list[dict]]) -> dict:
    su, dg = answers["summarisation"][0], answers["dialogue_generation"][0]
    if fam == "information_extraction":
        return {"fields": [{"name": "回复" if any("\u4e00" <= c <= "\u9fff" for c in dg["reply"]) else "reply", "value": dg["reply"][:158]}]}
    if fam == "summarisation":
        return {"summary": dg["reply"], "key_points": []}
    if fam == "dialogue_generation":
        return {"reply": su["summary"][:500]}
    return {"findings": su["key_points"], "conclusion": dg["reply"]}


def build() -> tuple[list[dict], list[dict]]:
    r = random.Random(7)
    dialogues, labels = [], []
    for domain in ("rental", "hotel", "after_sales"):
        for i in range(PER_DOMAIN):
            s = slots(domain, r)
            per_lang = {}
            for lang in ("zh", "en"):
                turns = dialogue(domain, lang, s)
                did = f"{lang}-{domain}-{i:02d}"
                dialogues.append({"dialogue_id": did, "lang": lang, "domain": domain, "turns": [{"role": ro, "text": t} for ro, t in turns]})
                per_lang[lang] = (did, turns, clean_answers(domain, lang, s))
            for lang in ("zh", "en"):
                did, turns, answers = per_lang[lang]
                other = per_lang["en" if lang == "zh" else "zh"][2]
                for fam, cleans in answers.items():
                    for v, answer in enumerate(cleans):
                        base = {"dialogue_id": did, "lang": lang, "task_family": fam, "instruction_id": INSTRUCTIONS[lang][fam]}
                        lid = f"{did}-{fam}-{v}"
                        labels.append({**base, "label_id": lid, "kind": "clean", "variant": v,
                                       "output_text": json.dumps(answer, ensure_ascii=False), "finish_reason": "stop"})
                        if v:
                            continue  # defects are made from the first clean answer of each family
                        for kind in DEFECTS:
                            text, finish = defect(kind, fam, lang, answer, other[fam][0], ignored(fam, answers), turns, r)
                            labels.append({**base, "label_id": f"{lid}-{kind}", "kind": kind, "variant": v,
                                           "output_text": text, "finish_reason": finish})
    return dialogues, labels


def main() -> None:
    dialogues, labels = build()
    for name, rows in (("dialogues", dialogues), ("labels", labels)):
        print(f"{name}: {write_jsonl(OUT / f'{name}.jsonl', rows)} lines")


if __name__ == "__main__":
    main()
