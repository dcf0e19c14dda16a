"""Detectors for personal data in English and Chinese text.

The quality stage uses them to catch PII that leaks into an answer; ingest redaction reuses the
same patterns. Precision matters as much as recall: prices, areas, dates, floors and room
layouts (``3室1厅``) are domain facts, so every pattern is anchored on what makes it personal
(a phone's shape, an ID's checksum, a unit keyword) rather than on "a long number".
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from dialinsight_core.text import CJK, fold_map, segmenter, tagged_words

__all__ = ["PII_TYPES", "PiiMatch", "Redactor", "compile_patterns", "find_names", "find_pii"]

_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"


def _cn_id_ok(s: str) -> bool:
    """GB 11643 checksum of an 18-character Chinese resident ID number."""
    total = sum(int(c) * w for c, w in zip(s[:17], _ID_WEIGHTS, strict=True))
    return _ID_CHECK[total % 11] == s[17].upper()


def _luhn_ok(digits: str) -> bool:
    total, alt = 0, False
    for ch in reversed(digits):
        d = int(ch)
        if alt:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
        alt = not alt
    return total % 10 == 0


_CARD_CUE = r"(?:卡号|银行卡|信用卡|借记卡|储蓄卡|(?i:card)(?:\s*(?i:number|no\.?|#))?)"
_ACCOUNT_EN = (r"(?i:\b(?:order|account|acct|member(?:ship)?|customer|booking|reservation|reference|ref|confirmation|"
               r"tracking|ticket|case|invoice|policy|loyalty|contract|lease)\s*(?:number|no\.?|num|#|id|code)?"
               r"\s*(?:is|was|:|#)?\s*)")
_ACCOUNT_ZH = (r"(?:订单号|订单编号|账号|帐号|账户|帐户|会员号|会员卡号|客户号|客户编号|工号|合同号|合同编号|"
               r"预订号|预定号|确认号|单号)\s*(?:是|为|：|:)?\s*")

# (type, pattern, group): group 0 = the whole match is personal; n = only group n is (the rest is context)
_PATTERNS: list[tuple[str, re.Pattern[str], int]] = [
    ("email", re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"), 0),
    # Chinese resident ID: 6-digit area, birth date, sequence, check character (checksum verified)
    ("id_number", re.compile(r"(?<![0-9])\d{6}(?:18|19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\d{3}[0-9Xx]"
                             r"(?![0-9A-Za-z])"), 0),
    ("ssn", re.compile(r"(?<![\d-])\d{3}-\d{2}-\d{4}(?![\d-])"), 0),
    # a card number named as one ("卡号…", "card number …"): personal whatever its checksum
    ("bank_card", re.compile(_CARD_CUE + r"\D{0,8}?((?:\d[ -]?){11,18}\d)(?!\d)"), 1),
    # order / account / member / booking numbers named as such (must hold a digit)
    ("account_id", re.compile(_ACCOUNT_EN + r"#?((?=[A-Za-z0-9-]*\d)[A-Za-z0-9][A-Za-z0-9-]{2,}[A-Za-z0-9](?: \d{3,})*)\b"), 1),
    ("account_id", re.compile(_ACCOUNT_ZH + r"((?=[A-Za-z0-9-]*\d)[A-Za-z0-9][A-Za-z0-9-]{3,}[A-Za-z0-9])"), 1),
    ("username", re.compile(r"(?i:\b(?:user\s?name|user\s?id|login(?:\s?id)?|screen\s?name)\s*(?:is|:)?\s*)"
                            r"@?([A-Za-z0-9][A-Za-z0-9._-]{2,}[A-Za-z0-9])\b"), 1),
    ("username", re.compile(r"(?:用户名|账户名|帐户名|登录名|昵称|微信号|QQ号?)\s*(?:是|为|：|:)?\s*"
                            r"@?([A-Za-z0-9][A-Za-z0-9._-]{2,})"), 1),
    ("username", re.compile(r"(?<![\w@.])@[A-Za-z][A-Za-z0-9_]{2,}\b"), 0),
    # bank card without a cue: 16-19 digits, optionally grouped by 4, Luhn-valid
    ("bank_card", re.compile(r"(?<![\d.-])(?:\d{4}[ -]?){3}\d{4}(?:[ -]?\d{1,3})?(?![\d-]|\.\d)"), 0),  # not a float's digits
    # phones: Chinese mobile (optionally +86), Chinese landline with area code, international, NANP
    ("phone", re.compile(r"(?<![\d+])(?:\+?86[ -]?)?1[3-9]\d[ -]?\d{4}[ -]?\d{4}(?!\d)"), 0),
    ("phone", re.compile(r"(?<!\d)0\d{2,3}-\d{7,8}(?!\d)"), 0),
    ("phone", re.compile(r"(?<![\w+])\+\d{1,3}[ -]?(?:\(\d{1,4}\)[ -]?)?\d{2,4}(?:[ -]?\d{2,4}){1,3}(?!\d)"), 0),
    ("phone", re.compile(r"(?<![\d(])(?:\(\d{3}\)\s?|\d{3}[-. ])\d{3}[-. ]\d{4}(?!\d)"), 0),
    # a Chinese address: optional province / city / district / town, a road, its number, building / unit / room
    ("street_address", re.compile(
        r"(?:[\u4e00-\u9fff]{2,6}?(?:省|自治区))?(?:[\u4e00-\u9fff]{1,6}?市)?(?:[\u4e00-\u9fff]{1,6}?(?:区|县))?"
        r"(?:[\u4e00-\u9fff]{1,8}?(?:镇|乡|街道))?[\u4e00-\u9fff]{1,10}?(?:大街|大道|胡同|路|街|巷|弄)\s*\d{1,5}\s*[号弄]"
        r"(?:院)?(?:\s*\d{1,3}\s*(?:号楼|栋|幢|座))?(?:\s*\d{1,2}\s*单元)?(?:\s*\d{2,5}\s*[室号])?"), 0),
    # unit / room numbers: a unit keyword followed by an identifier, or Chinese building/unit/room
    ("unit_number", re.compile(r"(?i)\b(?:unit|apt\.?|apartment|suite|room|flat)\s*(?:no\.?|number|#)?\s*"
                               r"(?:\d{1,4}[A-Za-z]?|[A-Za-z]\d{1,4})\b(?!\s*(?:bed|bath|room|br\b))"), 0),
    ("unit_number", re.compile(r"\d{1,3}(?:号楼|栋|幢|座)\s*\d{1,2}\s*单元(?:\s*\d{3,4}\s*(?:室|号))?|"
                               r"\d{1,2}\s*单元\s*\d{3,4}\s*(?:室|号)|"
                               r"(?<!\d)\d{3,4}\s*室(?!\s*\d?\s*厅)|\d{1,3}(?:号楼|栋|幢)(?!\s*\d*\s*层)"), 0),
    ("street_address", re.compile(r"\b\d{1,5}\s+(?:[A-Z][a-z]+\s){1,3}(?i:street|st\.|avenue|ave\.|road|rd\.|"
                                  r"boulevard|blvd\.|lane|ln\.|drive|dr\.|court|ct\.|place|pl\.|way)(?=\W|$)"), 0),
]
PII_TYPES = tuple(dict.fromkeys(t for t, _, _ in _PATTERNS))

# words that lead into an address but are not part of it ("地址是", "住在", "位于")
_ADDRESS_LEAD = re.compile(r"^(?:[^省市区县路街]*?(?:地址|住址|地点|位置|位于|住在|住|在|到|去|是|为|于|：|:))+")

_VALIDATORS = {
    "id_number": lambda s: _cn_id_ok(s),
}


def _card_without_cue_ok(s: str) -> bool:
    digits = re.sub(r"\D", "", s)
    return 16 <= len(digits) <= 19 and _luhn_ok(digits)


@dataclass(frozen=True)
class PiiMatch:
    type: str
    text: str
    start: int
    end: int
    confidence: float = 1.0  # < 1 where a checksum failed but the context names the kind (a card "卡号…")


def compile_patterns(patterns: dict[str, str] | None) -> tuple[tuple[str, re.Pattern[str], int], ...]:
    """A source's own id patterns (``sources[].pii_patterns``: type -> regex), tried before the
    built-in ones; a regex with a group marks only that group as personal."""
    return tuple((kind, (rx := re.compile(p)), 1 if rx.groups else 0) for kind, p in (patterns or {}).items())


def find_pii(text: str | None, extra: tuple[tuple[str, re.Pattern[str], int], ...] = ()) -> list[PiiMatch]:
    """Every personal-data span in ``text``, leftmost first; spans never overlap.

    Detectors run on the NFKC-folded copy (full-width digits and letters are found), spans are
    reported on the original. Patterns are tried in order of specificity, so an ID number is not
    also reported as a phone. Typed placeholders such as ``[PHONE_1]`` are not PII.
    """
    if not text:
        return []
    folded, index = fold_map(text, lower=False)
    found: list[PiiMatch] = []
    taken: list[tuple[int, int]] = []
    for kind, pattern, group in (*extra, *_PATTERNS):
        for m in pattern.finditer(folded):
            s, e = m.span(group)
            if s < 0:
                continue
            value = m.group(group)
            if kind == "street_address" and not value[:1].isdigit():
                lead = _ADDRESS_LEAD.match(value)
                if lead and lead.end() < len(value):
                    s += lead.end()
                    value = value[lead.end():]
            if any(s < te and ts < e for ts, te in taken):
                continue
            check = _VALIDATORS.get(kind)
            if check and not check(value):
                continue
            confidence = 1.0
            if kind == "bank_card":
                if group == 0 and not _card_without_cue_ok(value):
                    continue
                confidence = 1.0 if _luhn_ok(re.sub(r"\D", "", value)) else 0.7
            os_, oe = index[s], index[e - 1] + 1
            found.append(PiiMatch(kind, text[os_:oe], os_, oe, confidence))
            taken.append((s, e))
    return sorted(found, key=lambda p: p.start)


# --- redaction (ingest) -------------------------------------------------------------------------

_ZH_SURNAMES = ("王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘于蒋蔡余杜叶程苏魏吕丁任沈姚"
                "卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛闫段雷侯龙史陶黎贺顾毛郝龚邵万钱严覃武戴莫孔向汤")
# rarer surnames, some of them common characters too (和, 时, 房): only with the segmenter's name tag
_ZH_SURNAMES_ALL = _ZH_SURNAMES + ("常温康施文牛樊葛邢安齐易乔伍庞颜倪庄聂章鲁岳翟殷詹申欧耿关兰焦俞左柳甘祝包宁尚符"
                                   "舒阮柯纪梅童凌毕单季裴霍涂成苗谷盛曲翁冉骆蓝路游辛靳管柴蒙鲍华喻祁蒲房滕屈饶解"
                                   "牟艾尤阳时穆农司卓古吉缪简车项连芦麦褚娄窦戚岑景党宫费卜冷晏席卫米柏宗瞿桂全佟"
                                   "应臧闵苟邬边卞姬师和仇栾隋商刁沙荣巫寇桑郎甄丛仲虞敖巩明佘池查麻苑迟邝")
_ZH_COMPOUND = ("欧阳", "司马", "诸葛", "上官", "东方", "皇甫", "尉迟", "公孙", "慕容", "令狐", "长孙", "宇文", "司徒", "夏侯")
_ZH_TITLES = "先生|女士|小姐|经理|老师|总监|师傅|主任|主管|律师|医生|老板|阿姨"
_ZH_ROLES = "经纪人|置业顾问|顾问|客服|专员|经理|销售|店长|前台|管家|助理|主管|工程师|师傅|代表"
_ZH_GIVEN_STOP = set("的呀啊吗呢了是在和我您你他她们也就都很还要会来去说给帮把被这那哈嘛吧哦喔额嗯，。！？")
_NAME_PATTERNS = [
    # "my name is Ben Smith", "call me Angela", "Mr. Smith" (the name is group 1)
    re.compile(r"(?i:\bmy name is|\bmy name's|\bcall me|\bi'm called|\bi am called|\bname's)\s+"
               r"([A-Z][a-z]+(?:\s+[A-Z][a-z]+)?)(?=\s*(?:[,.!?;:]|$|\band\b|\bspeaking\b|\bfrom\b|\bhere\b|\bwith\b))"),
    re.compile(r"\b(?:Mr|Mrs|Ms|Miss|Dr|Mx|Prof)\.?\s+([A-Z][a-z]+(?:[-\s]+[A-Z][a-z]+)?)"),
    # 我姓李 / 王先生 / 李女士 / 张经理 (the surname, with a given name before the title when there is one)
    re.compile(r"(?:我姓|本人姓|免贵姓)([\u4e00-\u9fff]{1,2}?)(?=[，。,.!！?？\s]|$|先生|女士|小姐|，|叫|名)"),
    re.compile(rf"((?:{'|'.join(_ZH_COMPOUND)}|[{_ZH_SURNAMES}])[\u4e00-\u9fff]{{0,2}}?(?:{_ZH_TITLES}))"),
    # 小王 / 老李 as a name (before punctuation or a verb)
    re.compile(rf"(?<![\u4e00-\u9fff])((?:小|老)[{_ZH_SURNAMES}])(?=[，。！？,.!?\s]|$|说|在|会|是|也|跟|帮|负责)"),
]
# a Chinese name introduced by a cue: 我是(经纪人)黄芳 / 我叫陈思远 / 这边是客服小刘 / 联系人：王五 / 同事李强 / 转告王芳
_ZH_RELATIONS = ("同事|业主|房东|租客|客户|联系人|带看人|经办人|负责人|签约人|入住人|收件人|担保人|室友|老公|老婆|爱人|"
                 "太太|丈夫|妻子|朋友")
_ZH_INTRO = re.compile(rf"(?:我是|我叫|我的名字是|名字叫|本人是|这里是|这边是|我这边是|签名[：:]|转告|告诉|通知|找|问问|麻烦|"
                       rf"(?:{_ZH_RELATIONS}|{_ZH_ROLES})(?:是|叫|[：:])?)\s*(?:{_ZH_ROLES})?\s*")
# a name said to someone: at the start of an utterance or a clause before a comma / 您好, or after a greeting
_ZH_VOCATIVE = re.compile(r"(?:^|[。！？!?\n]|[—–-]{1,2}|(?:您好|你好|谢谢|辛苦了|早上好|下午好|晚上好)[，,]?)\s*"
                          r"(?=[\u4e00-\u9fff]{2,4}(?:[，,：:（(]|您好|你好|吗|呀|啊|$))")
# a name-tagged word this frequent in jieba's dictionary is an ordinary word or place (王府井 183, 顾问 1697);
# a person's name is rare there (黄芳: absent); it still counts after a cue (同事李强)
_ZH_COMMON_FREQ = 100
_ZH_MEASURE = set("张条位间套件个只台")
# words the segmenter tags as names that are ordinary nouns here, or given-name slots that are words
_ZH_NOT_GIVEN = set(_ZH_ROLES.split("|")) | set(_ZH_TITLES.split("|")) | {"同事", "业主", "房东", "高层", "明天", "时间",
                                                                     "方便", "安排"}
PLACEHOLDER_TYPES = {"email": "EMAIL", "id_number": "ID_NUMBER", "ssn": "ID_NUMBER", "bank_card": "BANK_CARD",
                     "phone": "PHONE", "unit_number": "UNIT", "street_address": "ADDRESS", "name": "NAME",
                     "account_id": "ACCOUNT", "username": "USERNAME"}


# a surname stated alone (我姓王): redacted where it is stated; it is too short to replace elsewhere
_SURNAME_CUE = re.compile(rf"(我姓|本人姓|免贵姓|姓)((?:{'|'.join(_ZH_COMPOUND)}|[{_ZH_SURNAMES}]))"
                          r"(?=[，。,.!！?？\s]|$|先生|女士|小姐|叫|名|的)")
# a surname before a title (王先生, 欧阳经理): the surname is redacted, the title kept
_TITLED = re.compile(rf"(?:(?<![\u4e00-\u9fff])|(?<=[我您你他她的和跟是找叫问请谢对给让把被]))"
                     rf"((?:{'|'.join(_ZH_COMPOUND)}|[{_ZH_SURNAMES}]))({_ZH_TITLES})")
_ASKS_NAME = re.compile(r"(?i)\byour (?:full )?name\b|\bwho am i speaking\b|怎么称呼|贵姓|您的名字|你的名字|你叫什么|您叫什么")
_BARE_NAME = re.compile(r"^(?:(?:it's|it is|i'm|i am)\s+)?([A-Z][a-z]+(?:\s+[A-Z][a-z]+)?)[.!]?$"
                        r"|^(?:我叫|我姓)?([\u4e00-\u9fff]{2,3})[。！]?$")

_NOT_NAMES = {"yes", "no", "hello", "hi", "thanks", "sure", "okay", "ok", "sorry", "好的", "是的", "谢谢", "你好", "您好", "可以"}
# English words that are also census first names; never a name on that evidence alone
_COMMON_WORDS = set("""
may june april august will bill mark grant rose summer dawn hope joy faith chase park lane bay sky star
an art guy van long king major price rich young page case love ivy iris holly ginger penny sandy rusty
crystal amber pearl ruby jade cherry olive violet lily daisy honey sunny stormy autumn winter
early pat sue don ray dean gay frank earl sterling royal ford reed wade cliff glen dale hall marsh
miles lou tom ed al sol son del ben ali lee ken kim jan sage ash river rock stone wood storm
monday tuesday wednesday thursday friday saturday sunday january february march september october
november december christmas easter agent customer sir madam ma'am
""".split()) - {"ben", "tom", "lee", "ken", "kim", "jan", "ed", "al", "pat", "sue", "don", "ray", "dean", "frank", "ali"}


@cache
def _first_names() -> frozenset[str]:
    """US census first names (the ``names`` package's lists, MIT): an English name signal where no
    cue phrase says "this is a name"; common English words among them never count alone."""
    import names  # lazy: only a dialogue with a capitalised word needs the lists

    root = Path(names.__file__).parent
    out: set[str] = set()
    for f in ("dist.male.first", "dist.female.first"):
        out.update(line.split()[0].lower() for line in (root / f).read_text().splitlines() if line.strip())
    return frozenset(out - _COMMON_WORDS)


@cache
def _last_names() -> frozenset[str]:
    import names  # lazy, see _first_names

    lines = (Path(names.__file__).parent / "dist.all.last").read_text().splitlines()[:20000]
    return frozenset(line.split()[0].lower() for line in lines if line.strip()) - _COMMON_WORDS


_EN_CUED = re.compile(
    r"(?i:\b(?:i'm|i am|it's|it is|this is|hi|hello|hey|dear|thanks|thank you|bye|goodbye|good morning|morning|"
    r"afternoon|evening|welcome|sorry|sure|ok|okay|great|yes|no|regards|cheers|best|sincerely|ask for|speak to|"
    r"speak with|talk to|talk with)\b[,:]?\s*(?:-\s*)?)"
    r"([A-Z][a-z]+(?:[-\s][A-Z][a-z]+)?)\b")
# a role or relation right before a capitalised word names a person whatever the name's origin
_EN_ROLE_CUED = re.compile(
    r"(?i:\b(?:named|colleague|agent|manager|landlord|landlady|technician|engineer|assistant|representative|rep|"
    r"host|owner|tenant|neighbou?r|roommate|wife|husband|partner|supervisor|concierge|receptionist|under|contact)\b"
    r"[,:]?\s*)([A-Z][a-z]+(?:\s[A-Z][a-z]+)?)\b")
_EN_CAPITALISED = re.compile(r"\b([A-Z][a-z]+)(?:\s+([A-Z][a-z]+(?:-[A-Z][a-z]+)?))?\b")
_EN_HERE = re.compile(r"\b([A-Z][a-z]+)(?=\s+(?:here|speaking)\b)")
# the second word makes a capitalised pair a place or a business, not a person ("Maple Court", "Grant Street")
_PLACE_WORDS = set("""street st avenue ave road rd drive dr lane ln boulevard blvd court ct place pl way terrace circle
square plaza park heights tower towers gardens garden estates apartments apartment village realty properties property
hotel inn suites suite hall house center centre station mall bay hill hills view point ridge crossing commons manor
lodge residences residence building office group company co inc llc ltd bank school university college hospital
church market shopping avenue lake river beach valley springs creek grove woods forest""".split())


def _en_names(text: str) -> list[str]:
    """English names: cue phrases (greetings, thanks, "this is X", signatures) with a census first
    name; a capitalised word after a role or relation ("our agent, Priya"); a census first name
    anywhere it is capitalised: with the capitalised word after it (a surname, unless that word
    makes it a place), inside a sentence, or opening one as a vocative ("Hannah, do you...")."""
    first, last = _first_names(), _last_names()
    out: list[str] = []
    for m in _EN_CUED.finditer(text):
        parts = m.group(1).replace("-", " ").split()
        if parts[0].lower() in first:
            out.append(m.group(1) if len(parts) == 1 or parts[1].lower() in last else parts[0])
    for m in _EN_ROLE_CUED.finditer(text):
        parts = m.group(1).split()
        if parts[0].lower() not in _COMMON_WORDS and parts[0].lower() not in _PLACE_WORDS:
            out.append(m.group(1) if len(parts) == 1 or parts[1].lower() not in _PLACE_WORDS else parts[0])
    out += [m.group(1) for m in _EN_HERE.finditer(text) if m.group(1).lower() in first]
    for m in _EN_CAPITALISED.finditer(text):
        given, family = m.group(1), m.group(2)
        if given.lower() not in first or (family and family.lower() in _PLACE_WORDS):
            continue
        sentence_start = re.search(r"(?:^|[.!?:;\"“”\n])\s*$", text[: m.start()]) is not None
        if family and (family.lower() in last or not sentence_start):
            out.append(f"{given} {family}")
        elif not family and (not sentence_start or text[m.end(): m.end() + 1] == ","):
            out.append(given)
    return out


def _zh_names(text: str) -> list[str]:
    """Chinese names: the segmenter's person-name tag (jieba ``nr``) on a word that starts with a
    surname, or on a surname followed by a given name it split off (丁 / 志强), plus names after
    a cue (我是经纪人黄芳, 同事李强, 您好王芳, a vocative 王芳，…), cut at jieba's word boundary."""
    if not CJK.search(text):
        return []
    jieba = segmenter()
    out: list[str] = []
    seg = tagged_words(text)
    for i, (w, flag) in enumerate(seg):
        prev = seg[i - 1][1] if i else ""
        if prev in ("r", "m", "q") and w[0] in _ZH_MEASURE:  # 这张卡, 两位, 一间: a measure word, not 张/位
            continue
        if len(w) == 1 and (w in _ZH_SURNAMES or (flag == "nr" and w in _ZH_SURNAMES_ALL)) and i + 1 < len(seg):
            nxt, nflag = seg[i + 1]
            given_tag = nflag[:2] in ("nr", "nz", "z") or (flag == "nr" and nflag == "ns")  # 丁/志强, 田/新华, 卢/建国
            if given_tag and 1 <= len(nxt) <= 2 and all(CJK.match(c) for c in nxt) and nxt not in _ZH_NOT_GIVEN:
                out.append(w + nxt)
            continue
        if flag.startswith("nr") and len(w) == 3 and w[-1] in _ZH_GIVEN_STOP:  # 宋丽会(给您): a verb glued on
            w = w[:2]
        if flag.startswith("nr") and jieba.dt.FREQ.get(w, 0) >= _ZH_COMMON_FREQ:  # 王府井, 顾问: a word people use
            continue
        if flag.startswith("nr") and (w[0] in _ZH_SURNAMES_ALL or w[:2] in _ZH_COMPOUND) and _zh_name_ok(w):
            out.append(w)
    for m in (*_ZH_INTRO.finditer(text), *_ZH_VOCATIVE.finditer(text)):
        name = _zh_name_at(text, m.end())
        if name:
            out.append(name)
    return out


def _zh_name_at(text: str, pos: int) -> str | None:
    """The name that starts at ``pos`` (a surname, then a given name of one or two characters), as
    the segmenter cuts it; None when no surname starts there."""
    rest = text[pos: pos + 8]
    if not rest or not (rest[0] in _ZH_SURNAMES or rest[:2] in _ZH_COMPOUND or (rest[0] in "小老" and rest[1:2] in _ZH_SURNAMES)):
        return None
    toks = segmenter().lcut(rest, HMM=True)
    name = toks[0]
    if len(name) == 1 and len(toks) > 1 and 1 <= len(toks[1]) <= 2 and all(CJK.match(c) for c in toks[1]) \
            and toks[1][0] not in _ZH_GIVEN_STOP and toks[1] not in _ZH_NOT_GIVEN:
        name += toks[1]
    if len(name) > 3 and name[:2] not in _ZH_COMPOUND:  # 程欣怡你: the segmenter glued a following word on
        name = name[:3]
    return name if _zh_name_ok(name) else None


def _zh_name_ok(name: str) -> bool:
    """Two to four ideographs that are not a greeting, a role or title, and do not end in a particle
    or pronoun (的, 吗, 您): the last sieve for every Chinese name candidate."""
    return (2 <= len(name) <= 4 and all(CJK.match(c) for c in name) and name not in _NOT_NAMES
            and name not in _ZH_NOT_GIVEN and name[-1] not in _ZH_GIVEN_STOP)


def find_names(text: str) -> list[str]:
    """Person names a dialogue states about someone ("my name is Ben", "王先生", "您好，我是经纪人黄芳",
    "Thanks, Sarah")."""
    out: list[str] = []
    for pattern in _NAME_PATTERNS:
        out.extend(m.group(1) for m in pattern.finditer(text) if m.group(1))
    return out + _zh_names(text) + _en_names(text)


class Redactor:
    """Typed, consistent placeholders within one dialogue: the same phone number is ``[PHONE_1]``
    in every turn, a second one ``[PHONE_2]``; counts per type feed the compliance audit.

    Names found anywhere in the dialogue ("my name is Ben") are also replaced where they appear
    alone later ("Thanks, Ben"). Domain facts (prices, areas, dates, floors, layouts) are untouched:
    the detectors only match what makes a string personal.
    """

    def __init__(self, extra: tuple[tuple[str, re.Pattern[str], int], ...] = ()) -> None:
        self.extra = extra  # the source's own id patterns (``compile_patterns``)
        self._ids: dict[tuple[str, str], str] = {}
        self._next: dict[str, int] = {}
        self._names: list[str] = []
        self._canonical: dict[str, str] = {}  # "Ben" -> "Ben Smith": one person, one placeholder
        self.counts: dict[str, int] = {}

    def learn_names(self, texts: list[str]) -> None:
        """Names stated in the dialogue, including a bare answer to "could you give me your name?"."""
        found: list[str] = []
        for i, text in enumerate(texts):
            found += find_names(text)
            if i + 1 < len(texts) and _ASKS_NAME.search(text):
                m = _BARE_NAME.match(texts[i + 1].strip())
                if m:
                    found.append(m.group(1) or m.group(2))
        for name in found:
            # "Ben Smith" -> also "Ben" and "Smith"; "王小明经理" -> "王小明" (the title stays in the text:
            # "[NAME_1]经理"); a surname + title ("王先生") is redacted where it occurs (``_TITLED``)
            bare = re.sub(f"(?:{_ZH_TITLES})$", "", name)
            parts = [name, *name.split()] if " " in name else [bare] if bare != name else [name]
            for part in dict.fromkeys(parts):
                if len(part) >= 2 and part not in self._names and part.lower() not in _NOT_NAMES:
                    self._names.append(part)
                    self._canonical.setdefault(part, name)
        self._names.sort(key=len, reverse=True)  # "Ben Smith" before "Ben"

    def _placeholder(self, kind: str, value: str) -> str:
        label = PLACEHOLDER_TYPES[kind]
        key = (label, re.sub(r"[\s().+-]", "", value).lower())
        if key not in self._ids:
            self._next[label] = self._next.get(label, 0) + 1
            self._ids[key] = f"[{label}_{self._next[label]}]"
        self.counts[label] = self.counts.get(label, 0) + 1
        return self._ids[key]

    def __call__(self, text: str) -> str:
        spans = [(m.start, m.end, self._placeholder(m.type, m.text)) for m in find_pii(text, self.extra)]
        out, pos = [], 0
        for s, e, ph in spans:
            out.append(text[pos:s])
            out.append(ph)
            pos = e
        out.append(text[pos:])
        text = _SURNAME_CUE.sub(lambda m: m.group(1) + self._placeholder("name", m.group(2)), "".join(out))
        text = _TITLED.sub(lambda m: self._placeholder("name", m.group()) + m.group(2), text)  # 王先生 -> [NAME_2]先生
        for name in self._names:
            cjk = bool(CJK.match(name))
            pattern = re.escape(name) if cjk else rf"\b{re.escape(name)}\b"
            text = re.sub(pattern, lambda m: self._placeholder("name", self._canonical.get(m.group(), m.group())), text)
        return text

