# ruff: noqa: E501 - value pools and frames are data: one pool per line reads best
"""Build the labelled PII set (zh + en) kept in ``tests/fixtures/pii_labelled/``.

Each line is one utterance from an agent <-> customer conversation (rental, hotel, after-sales)
holding exactly one personal datum of a known type at a known place, plus the domain facts it
states (prices, areas, floors, dates, counts) that redaction must keep; ``clean`` lines hold no
personal datum but words that look like one (出租车, 王府井, Grant Street, "in May"). Names appear
in every position: self-introductions, titles, vocatives at either end, third person,
signatures, role + name. Seeded: the same file on every run (``python benchmarks/pii_set.py``).
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.jsonl import write_jsonl

OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "pii_labelled"
PER_TYPE = 300

ZH_SURNAMES = list("王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘蒋蔡余杜叶程苏魏吕丁任沈姚卢姜崔钟谭陆汪范金")
ZH_GIVEN = ["芳", "伟", "娜", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳", "杰", "娟", "涛", "超", "秀英", "霞", "平", "刚",
            "桂英", "思远", "子轩", "欣怡", "浩然", "雨桐", "梓涵", "一鸣", "嘉怡", "建国", "晓燕", "志强", "海燕", "俊杰", "佳琪", "文博",
            "丽华", "春梅", "国庆", "明辉", "晨曦", "宇航", "婷婷", "小红", "建华", "玉兰", "凤英", "德明", "新华", "秋菊"]
EN_FIRST = ["Sarah", "Michael", "Emily", "David", "Jessica", "James", "Ashley", "Robert", "Amanda", "Daniel", "Megan", "Kevin",
            "Laura", "Brian", "Rachel", "Jason", "Nicole", "Eric", "Hannah", "Steven", "Olivia", "Andrew", "Sophia", "Thomas",
            "Natalie", "Ryan", "Victoria", "Justin", "Lauren", "Brandon", "Chloe", "Tyler", "Grace", "Nathan", "Isabella",
            "Jacob", "Madison", "Ethan", "Abigail", "Logan", "Priya", "Wei", "Carlos", "Fatima", "Mohammed", "Aisha", "Luis"]
EN_LAST = ["Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis", "Rodriguez", "Martinez", "Wilson",
           "Anderson", "Taylor", "Thomas", "Moore", "Jackson", "Martin", "Thompson", "White", "Harris", "Clark", "Lewis",
           "Walker", "Hall", "Allen", "Young", "Hernandez", "Lopez", "Nguyen", "Patel", "Chen", "Kim", "Singh", "Murphy"]
ZH_FACTS = ["月租4500元", "89平米", "3室1厅", "12楼", "2024年5月3日", "押金两个月", "总价350万", "9月22日下午三点", "两室一厅", "第5层",
            "每晚680元", "含早餐2份", "保修期一年", "退款299元", "共18层", "1.5万押金", "3月1日起租", "面积120㎡"]
EN_FACTS = ["$1,200 per month", "89 m2", "floor 15", "2 bedrooms", "May 3", "3pm on Friday", "a deposit of $2,400",
            "the 12th floor", "$189 a night", "2 breakfasts", "a one-year warranty", "a refund of $59", "1,050 square feet",
            "move-in on June 1"]
ZH_CITIES = [("北京市", "朝阳区"), ("上海市", "浦东新区"), ("杭州市", "西湖区"), ("广州市", "天河区"), ("深圳市", "南山区"),
             ("成都市", "武侯区"), ("南京市", "鼓楼区"), ("武汉市", "洪山区"), ("", "海淀区"), ("", "")]
ZH_ROADS = ["建国路", "文三路", "中山大道", "天府大道", "南京路", "解放路", "人民路", "长安街", "学院路", "建国门外大街", "东湖路", "滨江大道",
            "科技园南路", "延安西路", "黄浦路", "和平里北街"]
EN_STREETS = ["Maple", "Oak", "Cedar", "Pine", "Elm", "Washington", "Lake", "Hill", "Park", "Sunset", "Highland", "River", "Church",
              "Mill", "Spring Valley", "Forest Hills"]
EN_SUFFIX = ["Street", "Avenue", "Road", "Drive", "Lane", "Boulevard", "St.", "Ave.", "Rd."]


def luhn_digit(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return str((10 - total % 10) % 10)


def cn_id(r: random.Random) -> str:
    body = f"{r.choice(['110105', '310115', '330106', '440305', '510107'])}{r.randint(1955, 2004)}" \
           f"{r.randint(1, 12):02d}{r.randint(1, 28):02d}{r.randint(0, 999):03d}"
    w = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    return body + "10X98765432"[sum(int(c) * x for c, x in zip(body, w, strict=True)) % 11]


def card(r: random.Random, prefix: str, n: int, valid: bool) -> str:
    body = prefix + "".join(str(r.randint(0, 9)) for _ in range(n - len(prefix) - 1))
    check = luhn_digit(body)
    if not valid:
        check = str((int(check) + r.randint(1, 9)) % 10)
    digits = body + check
    if r.random() < 0.4:
        return " ".join(digits[i : i + 4] for i in range(0, len(digits), 4))
    return digits


def full_width(s: str) -> str:
    return "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in s)


def zh_value(kind: str, r: random.Random) -> tuple[str, str]:
    """(frame with {v} and {f}, value) for one Chinese instance of ``kind``."""
    if kind == "name":
        s, g = r.choice(ZH_SURNAMES), r.choice(ZH_GIVEN)
        full = s + g
        frames = [("您好，我是经纪人{v}，有什么可以帮您？{f}的房子还在。", full), ("我叫{v}，想找一套{f}的房子。", full),
                  ("{v}您好，{f}的那套已经帮您约好了。", full), ("好的，谢谢{v}。{f}没问题。", full),
                  ("麻烦转告{v}，{f}。", full), ("我同事{v}明天带您去看{f}的那套。", full), ("这套房的业主是{v}，{f}。", full),
                  ("联系人：{v}，{f}", full), ("——{v}（置业顾问）{f}", full), ("{v}经理说{f}可以谈。", s),
                  ("请问是{v}女士吗？{f}的订单已确认。", s), ("客服{v}为您服务，{f}。", full), ("我是{v}，上周咨询过{f}的房子。", full),
                  ("{v}，你那边方便吗？{f}。", full), ("刚才{v}打电话说{f}。", full), ("您找前台{v}就可以，{f}。", full),
                  ("房东{v}同意{f}。", full), ("带看人：{v}，时间{f}。", full), ("{v}先生，您看{f}可以吗？", s),
                  ("酒店经理{v}会给您办理，{f}。", full), ("售后工程师{v}明天上门，{f}。", full), ("您好{v}，{f}的房间给您留着。", full)]
        frame, name = r.choice(frames)
        if name == s:
            title = frame[frame.index("{v}") + 3:][:2]
            return frame.replace("{v}" + title, "{v}"), s + title
        return frame, name
    if kind == "phone":
        m = f"1{r.choice('3456789')}{r.randint(0, 9)}{r.randint(0, 9999):04d}{r.randint(0, 9999):04d}"
        v = r.choice([m, f"{m[:3]} {m[3:7]} {m[7:]}", f"{m[:3]}-{m[3:7]}-{m[7:]}", f"+86 {m}", full_width(m),
                      f"0{r.choice(['10', '21', '571', '755'])}-{r.randint(10000000, 99999999)}"])
        return r.choice(["我的电话是{v}，{f}的那套我想看看。", "手机{v}，随时打。{f}。", "{v}是我微信同号，{f}。", "联系方式：{v}。{f}",
                         "打这个号{v}找我就行，{f}。", "您记一下，{v}，{f}。", "有事打{v}，{f}的事我来跟进。"]), v
    if kind == "email":
        v = f"{r.choice(['zhangwei', 'lily.chen', 'wang_fang88', 'hr', 'tenant2024', 'liu.qiang'])}{r.randint(1, 999)}@" \
            f"{r.choice(['qq.com', '163.com', 'gmail.com', 'example.cn', 'sina.com.cn'])}"
        return r.choice(["邮箱是{v}，合同发这里，{f}。", "发到{v}吧，{f}。", "我的邮箱：{v}。{f}", "把{f}的资料发到{v}。"]), v
    if kind == "id_number":
        return r.choice(["身份证号{v}，{f}。", "证件号码是{v}。{f}", "我身份证{v}，你核对一下，{f}。", "入住人身份证：{v}，{f}"]), cn_id(r)
    if kind == "bank_card":
        valid = r.random() < 0.7
        v = card(r, r.choice(["6222", "6217", "6228", "6259"]), r.choice([16, 19]), valid)
        cued = ["卡号{v}，{f}的押金退到这里。", "银行卡号是{v}，{f}。", "信用卡{v}，{f}。", "退款打到卡号{v}，{f}。"]
        free = ["转到{v}这张卡，{f}。", "{v}，{f}的钱打这里。"]
        return r.choice(cued if not valid else cued + free), v
    if kind == "account_id":
        v = r.choice([f"DD{r.randint(2020, 2025)}{r.randint(10000000, 99999999)}", f"{r.randint(10000000, 999999999)}",
                      f"HT-{r.randint(2020, 2025)}-{r.randint(1000, 9999)}", f"VIP{r.randint(100000, 999999)}"])
        return r.choice(["订单号{v}，{f}。", "会员号：{v}，{f}。", "合同编号是{v}，{f}。", "我的账号{v}，{f}。",
                         "预订号{v}，{f}。", "客户编号{v}，{f}。"]), v
    if kind == "username":
        v = r.choice([f"zhangwei_{r.randint(1, 99)}", f"lucky{r.randint(2000, 2025)}", f"fang.li{r.randint(1, 999)}",
                      f"tenant{r.randint(100, 9999)}"])
        return r.choice(["用户名是{v}，{f}。", "我的微信号{v}，{f}。", "登录名：{v}，{f}。", "App用户名{v}，{f}。"]), v
    if kind == "street_address":
        city, district = r.choice(ZH_CITIES)
        road = r.choice(ZH_ROADS)
        v = f"{city}{district}{road}{r.randint(1, 999)}号"
        if r.random() < 0.4:
            v += f"{r.randint(1, 30)}栋{r.randint(1, 6)}单元{r.randint(1, 30)}0{r.randint(1, 6)}室"
        return r.choice(["地址在{v}，{f}。", "地址是{v}，{f}。", "我住在{v}，{f}。", "房子位于{v}，{f}。", "寄到{v}，{f}。",
                         "{v}，{f}，您过来看看。", "就在{v}那边，{f}。"]), v
    if kind == "unit_number":
        v = r.choice([f"{r.randint(1, 30)}号楼{r.randint(1, 6)}单元{r.randint(1, 30)}0{r.randint(1, 6)}室",
                      f"{r.randint(1, 30)}0{r.randint(1, 6)}室", f"{r.randint(1, 30)}栋{r.randint(1, 6)}单元"])
        return r.choice(["我住{v}，{f}。", "房号是{v}，{f}。", "送到{v}，{f}。", "{v}的业主，{f}。"]), v
    raise ValueError(kind)


def en_value(kind: str, r: random.Random) -> tuple[str, str]:
    f, last = r.choice(EN_FIRST), r.choice(EN_LAST)
    if kind == "name":
        return r.choice([("Hi {v}, thanks for calling about {f}.", f), ("My name is {v} and I saw the listing with {f}.", f"{f} {last}"),
                         ("This is {v} from the leasing office, about {f}.", f), ("I'll ask {v} to show you {f}.", f),
                         ("Thanks, {v}! {f} works.", f), ("Best,\n{v}\n(re: {f})", f), ("{v} here, following up on {f}.", f),
                         ("Please contact {v} about {f}.", f"{f} {last}"), ("I spoke to {v} yesterday about {f}.", f),
                         ("Mr. {v} will meet you in the lobby; it's {f}.", last), ("Sure {v}, {f} is fine.", f),
                         ("Our agent, {v}, can show {f}.", f), ("{v}, do you still want {f}?", f), ("The landlord is {v}; {f}.", f"{f} {last}"),
                         ("Can I speak with {v} about {f}?", f), ("Ms. {v} asked for {f}.", last), ("Regards, {v}. {f}", f),
                         ("The booking is under {v}, {f}.", f"{f} {last}"), ("Good morning {v}! {f} is confirmed.", f),
                         ("Our technician {v} will come by; {f}.", f"{f} {last}")])
    if kind == "phone":
        a, b, c = r.randint(201, 989), r.randint(200, 999), r.randint(0, 9999)
        v = r.choice([f"({a}) {b}-{c:04d}", f"{a}-{b}-{c:04d}", f"+1 {a} {b} {c:04d}", f"{a}.{b}.{c:04d}",
                      f"+44 20 {r.randint(7000, 7999)} {c:04d}"])
        return r.choice(["Call me at {v} about {f}.", "My number is {v}; {f} sounds good.", "You can reach me on {v}. {f}",
                         "Text {v} when {f} is ready.", "Phone: {v} ({f})"]), v
    if kind == "email":
        v = f"{f.lower()}.{last.lower()}{r.randint(1, 99)}@{r.choice(['gmail.com', 'example.com', 'outlook.com', 'mail.co.uk'])}"
        return r.choice(["Email me at {v} about {f}.", "Send the lease to {v}; {f}.", "My email is {v}. {f}"]), v
    if kind == "id_number":
        v = f"{r.randint(100, 665)}-{r.randint(10, 99)}-{r.randint(1000, 9999)}"
        return r.choice(["My SSN is {v}, for {f}.", "Social security number {v}; {f}.", "For the credit check: {v}. {f}"]), v
    if kind == "bank_card":
        valid = r.random() < 0.7
        v = card(r, r.choice(["4", "51", "37", "6011"]), 16, valid)
        cued = ["My card number is {v}, for {f}.", "Card: {v}; {f}.", "Charge card number {v} for {f}."]
        return r.choice(cued if not valid else [*cued, "Use {v} for {f}."]), v
    if kind == "account_id":
        v = r.choice([f"ORD-{r.randint(1000000, 9999999)}", f"{r.randint(10000000, 99999999)}", f"BK{r.randint(20200000, 20259999)}",
                      f"X{r.randint(100, 999)}Y{r.randint(10, 99)}"])
        return r.choice(["My order number is {v}, about {f}.", "Account #{v}; {f}.", "Booking reference {v} for {f}.",
                         "Confirmation code: {v}. {f}", "The case number is {v}; {f}.", "Member ID {v}, {f}."]), v
    if kind == "username":
        v = r.choice([f"{f.lower()}{r.randint(1, 99)}", f"{f.lower()}_{last.lower()}", f"tenant_{r.randint(100, 9999)}"])
        frame = r.choice(["My username is {v}, about {f}.", "Login: {v}; {f}.", "I'm @{v} on the app; {f}.", "User ID {v}, {f}."])
        return (frame.replace("@{v}", "{v}"), "@" + v) if "@{v}" in frame else (frame, v)
    if kind == "street_address":
        v = f"{r.randint(1, 9999)} {r.choice(EN_STREETS)} {r.choice(EN_SUFFIX)}"
        return r.choice(["I live at {v}; {f}.", "The house is at {v}, {f}.", "Ship it to {v}. {f}", "{v} is the address, {f}."]), v
    if kind == "unit_number":
        v = r.choice([f"unit {r.randint(1, 40)}{r.choice('ABCD')}", f"apt {r.randint(1, 40)}{r.choice('ABCD')}", f"Suite {r.randint(100, 999)}",
                      f"room {r.randint(100, 2999)}", f"flat {r.randint(1, 40)}"])
        return r.choice(["I'm in {v}; {f}.", "The keys for {v} are ready, {f}.", "Deliver to {v}. {f}"]), v
    raise ValueError(kind)


ZH_CLEAN = ["我想打出租车去看房，{f}。", "王府井附近有没有{f}的房子？", "这套在黄金地段，{f}。", "我和先生一起来看{f}的那套。",
            "小区环境很好，{f}。", "老房子也可以，{f}。", "明天下午方便吗？{f}。", "房间号待定，{f}。", "单号还没出来，{f}。",
            "高层视野好，{f}。", "周边有地铁2号线，{f}。", "快递三天到，{f}。", "我姓名都填好了，{f}。", "经理说{f}可以谈。"]
EN_CLEAN = ["The unit on Grant Street is {f}.", "Maple Court has {f}.", "Will you take {f}?", "Mark the date: {f}.",
            "Park Avenue is nice, {f}.", "It opens in May with {f}.", "Bill me later for {f}.", "Jordan Heights offers {f}.",
            "Call the office about {f}.", "Order a cleaning before {f}.", "My account is fine, {f}.", "The room has {f}."]
TYPES = ("name", "phone", "email", "id_number", "bank_card", "account_id", "username", "street_address", "unit_number")


def build() -> dict[str, list[dict]]:
    r = random.Random(13)
    out: dict[str, list[dict]] = {}
    for lang, value, facts, clean in (("zh", zh_value, ZH_FACTS, ZH_CLEAN), ("en", en_value, EN_FACTS, EN_CLEAN)):
        rows = []
        for kind in TYPES:
            for i in range(PER_TYPE):
                frame, v = value(kind, r)
                fact = r.choice(facts)
                text = frame.replace("{v}", v).replace("{f}", fact)
                rows.append({"id": f"{lang}-{kind}-{i:03d}", "lang": lang, "text": text, "pii": [{"type": kind, "value": v}],
                             "facts": [fact]})
        for i in range(PER_TYPE):
            fact = r.choice(facts)
            rows.append({"id": f"{lang}-clean-{i:03d}", "lang": lang, "text": r.choice(clean).replace("{f}", fact), "pii": [],
                         "facts": [fact]})
        out[lang] = rows
    return out


def main() -> None:
    for lang, rows in build().items():
        print(f"{lang}: {write_jsonl(OUT / f'{lang}.jsonl', rows)} lines -> {OUT / f'{lang}.jsonl'}")


if __name__ == "__main__":
    main()
