# ruff: noqa: E501 - phrase pools are data: one pool per line reads best
"""A seeded synthetic transcript corpus of any size, zh + en, for the scale benchmarks.

English dialogues recombine the bundled STAR rental sample: a real dialogue is the skeleton (its
turn count and who speaks when), and about a third of its turns are swapped for same-role turns of
other STAR dialogues. Chinese dialogues are built from per-scene phrase pools with slots (district,
layout, rent, floor, date), in the same turn-count distribution. Personal data comes from the
labelled PII set (``tests/fixtures/pii_labelled``): a share of dialogues get one or two of its
utterances (names, phones, ids, cards, addresses) as customer or agent turns. A share of dialogues
are exact copies or small edits of earlier ones (the near-duplicate screen's work), and the scene
mix follows the taxonomy (some dialogues carry a scene label, the rest are placed by keywords).

    .venv/bin/python benchmarks/synth_corpus.py --n 100000 --out build/synth/100k [--zh-share 0.5]

Writes ``part-00000.jsonl`` … (``--part-size`` dialogues each, the ``jsonl`` adapter's format:
``{"id", "scene"?, "turns": [{"role", "text"}]}``) and ``corpus.meta`` (JSON: the parameters and what
was generated). The same arguments give the same bytes.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dialinsight_core.ingest.adapters import parse_star  # noqa: E402

# scene -> (share, label in the source or None: placed by keywords)
SCENES = {"rental_search": 0.35, "viewing_appointment": 0.30, "purchase_consultation": 0.12,
          "price_negotiation": 0.10, "after_sales": 0.08, "general_inquiry": 0.05}
ZH_DISTRICTS = ["朝阳区", "海淀区", "浦东新区", "西湖区", "天河区", "南山区", "武侯区", "鼓楼区", "洪山区", "滨江区", "徐汇区", "东城区"]
ZH_ESTATES = ["阳光花园", "碧水湾", "金色家园", "翠湖苑", "锦绣华庭", "东方名邸", "望京新城", "绿地公馆", "万科城", "星河湾", "紫薇花园", "和平里小区"]
ZH_LAYOUTS = ["一室一厅", "两室一厅", "两室两厅", "三室一厅", "三室两厅", "四室两厅", "单间", "开间"]
ZH_AMENITIES = ["有电梯", "带阳台", "南北通透", "精装修", "拎包入住", "有车位", "近地铁", "有燃气", "家电齐全", "朝南"]
ZH_TIMES = ["周六上午十点", "周日下午两点", "明天下午三点", "后天上午", "这周五晚上七点", "下周一中午", "今天下午四点半"]
ZH = {
    "rental_search": {
        "customer": ["你好，我想在{d}租一套{l}，预算每月{p}元左右。", "有没有{a}的{l}？我预算{p}元。", "我想租{d}附近的房子，最好{a}。",
                     "{e}还有{l}出租吗？", "租金能接受{p}元以内，几室都可以。", "我一个人住，想找个{l}，{a}的。", "楼层高一点好，{f}楼左右可以吗？",
                     "押金怎么付？押一付三吗？", "附近有地铁站吗？", "可以养宠物吗？"],
        "agent": ["您好，请问您想租在哪个区域？预算多少？", "{e}有一套{l}，月租{p}元，{f}楼，{a}。", "我给您推荐{d}的{e}，{l}，{s}平米，月租{p}元。",
                  "这套房子{a}，押一付三，租金每月{p}元。", "目前{d}的{l}行情大概在{p}元左右。", "好的，我帮您再找找{a}的房源。",
                  "这个小区离地铁站步行五分钟。", "房东同意养小型宠物，押金多付一个月。"],
    },
    "viewing_appointment": {
        "customer": ["我想预约{t}去看一下{e}的{l}。", "{t}可以带看吗？", "看房需要带什么证件？", "能不能改到{t}？我那天有事。",
                     "好的，那就{t}，在小区门口见。", "看房大概需要多长时间？", "我想再约一次看房，{t}方便吗？"],
        "agent": ["{t}可以的，我在{e}门口等您。", "已经帮您预约了{t}看房，请带身份证。", "好的，看房改到{t}，我会提前联系房东。",
                  "看房大约半小时，{e}的{l}在{f}楼。", "请问您贵姓？我登记一下预约。", "预约成功，{t}我们带看{e}。"],
    },
    "purchase_consultation": {
        "customer": ["我想在{d}买一套{l}，总价{q}万以内。", "首付要多少？贷款能贷几成？", "{e}的房子是满五唯一吗？", "买房的税费大概多少？",
                     "公积金贷款可以用吗？", "这套房子的产权是多少年？"],
        "agent": ["{e}的{l}总价{q}万，{s}平米，{f}楼。", "首付三成，贷款七成，月供大概{p}元。", "这套满五唯一，税费比较低。",
                  "公积金贷款可以用，利率更低一些。", "产权七十年，{a}。", "我帮您算一下首付和月供。"],
    },
    "price_negotiation": {
        "customer": ["{p}元有点贵，能便宜一点吗？", "如果我签两年，租金能优惠吗？", "能不能降到{p}元？", "中介费可以打折吗？",
                     "房东能不能再让一点？", "押金能少付一个月吗？"],
        "agent": ["我帮您跟房东砍价试试。", "签两年的话可以优惠到每月{p}元。", "房东说最低{p}元，不能再低了。", "中介费可以给您打九折。",
                  "这个价格在{d}已经很优惠了。", "押金可以改成押一付一。"],
    },
    "after_sales": {
        "customer": ["房子的热水器坏了，能派人维修吗？", "我退租了，押金什么时候退？", "空调不制冷，想报修。", "我要投诉，维修师傅一直没来。",
                     "合同里写的家电少了一台洗衣机。", "退租时押金被扣了，为什么？"],
        "agent": ["很抱歉，我们安排维修师傅{t}上门。", "押金会在退租后七个工作日内退还。", "已经登记报修，师傅会提前联系您。",
                  "非常抱歉给您带来不便，我马上跟进投诉。", "我跟房东确认一下洗衣机的问题。", "扣押金是因为墙面损坏，我发照片给您看。"],
    },
    "general_inquiry": {
        "customer": ["你们公司周末上班吗？", "请问门店在哪里？", "我想咨询一下。", "你们的服务费怎么收？", "可以线上签合同吗？"],
        "agent": ["我们周末正常上班，早九点到晚八点。", "门店在{d}{e}对面。", "您请说，有什么可以帮您？", "服务费是一个月租金的一半。",
                  "可以线上签约，很方便。"],
    },
}
ZH_OPEN = {"customer": ["你好。", "您好，在吗？", "你好，我想咨询一下。"], "agent": ["您好，欢迎来电，请问有什么可以帮您？", "您好，我是这边的经纪人。"]}
ZH_CLOSE = {"customer": ["好的，谢谢。", "明白了，谢谢你。", "好的，再见。"], "agent": ["不客气，还有什么可以帮您的吗？", "好的，再见，祝您生活愉快！", "有问题随时联系我。"]}
EN_SCENE_HINT = {"apartment_search": "rental_search", "apartment_schedule": "viewing_appointment"}


@dataclass
class CorpusSpec:
    n: int
    seed: int = 20240314
    zh_share: float = 0.5
    pii_share: float = 0.3  # dialogues with one or two utterances holding personal data
    exact_dup_share: float = 0.01  # exact copies of an earlier dialogue (id differs)
    near_dup_share: float = 0.04  # small edits of an earlier dialogue
    labelled_share: float = 0.6  # dialogues carrying a source scene label (the rest: keywords)
    part_size: int = 50_000


class Generator:
    def __init__(self, spec: CorpusSpec):
        self.spec = spec
        self.rng = random.Random(spec.seed)
        star = sorted((ROOT / "data" / "star_apartment_en" / "dialogues").glob("*.json"))
        self.star = []
        for path in star:
            raw = parse_star(path.read_bytes(), path.name)
            turns = [(r, t) for r, t, _ in raw.turns if r in ("agent", "customer") and t.strip()]
            if len(turns) >= 2:
                self.star.append((turns, raw.scene_hints))
        self.en_pool = {role: [t for turns, _ in self.star for r, t in turns if r == role] for role in ("agent", "customer")}
        self.turn_counts = [len(turns) for turns, _ in self.star]
        pii_dir = ROOT / "tests" / "fixtures" / "pii_labelled"
        self.pii = {lang: [json.loads(x)["text"] for x in (pii_dir / f"{lang}.jsonl").read_text(encoding="utf-8").splitlines()
                           if json.loads(x)["pii"]] for lang in ("zh", "en")}
        self.kept: list[dict] = []  # a window of recent dialogues that duplicates copy from
        self.stats: Counter[str] = Counter()

    def _fill(self, phrase: str) -> str:
        r = self.rng
        return phrase.format(d=r.choice(ZH_DISTRICTS), e=r.choice(ZH_ESTATES), l=r.choice(ZH_LAYOUTS), a=r.choice(ZH_AMENITIES),
                             t=r.choice(ZH_TIMES), p=r.randrange(1500, 15000, 100), q=r.randrange(80, 900, 5),
                             f=r.randrange(1, 33), s=r.randrange(25, 180))

    def zh_dialogue(self, scene: str) -> list[dict[str, str]]:
        r = self.rng
        n = r.choice(self.turn_counts)
        role = r.choice(("customer", "agent"))
        pool = ZH[scene]
        turns = []
        for i in range(n):
            if i == 0:
                text = r.choice(ZH_OPEN[role])
            elif i >= n - 2 and n > 4:
                text = r.choice(ZH_CLOSE[role])
            else:
                other = ZH[r.choice(list(ZH))] if r.random() < 0.1 else pool  # a side question of another scene
                text = self._fill(r.choice(other[role]))
            turns.append({"role": role, "text": text})
            role = "agent" if role == "customer" else "customer"
        return turns

    def en_dialogue(self) -> tuple[list[dict[str, str]], str | None]:
        r = self.rng
        turns, hints = r.choice(self.star)
        out = [{"role": role, "text": r.choice(self.en_pool[role]) if r.random() < 0.33 else text} for role, text in turns]
        return out, EN_SCENE_HINT.get(hints[0]) if hints else None

    def add_pii(self, turns: list[dict[str, str]], lang: str) -> None:
        r = self.rng
        for _ in range(r.choice((1, 1, 2))):
            i = r.randrange(len(turns))
            turns[i] = {"role": turns[i]["role"], "text": r.choice(self.pii[lang])}

    def dialogue(self, i: int) -> dict:
        r, spec = self.rng, self.spec
        did = f"synth-{spec.seed}-{i:08d}"
        x = r.random()
        if self.kept and x < spec.exact_dup_share:
            self.stats["exact_duplicates"] += 1
            return {**r.choice(self.kept), "id": did}
        if self.kept and x < spec.exact_dup_share + spec.near_dup_share:
            src = r.choice(self.kept)
            turns = [dict(t) for t in src["turns"]]
            j = r.randrange(len(turns))
            turns[j]["text"] = turns[j]["text"] + (" 好的。" if any("\u4e00" <= c <= "\u9fff" for c in turns[j]["text"]) else " ok")
            self.stats["near_duplicates"] += 1
            return {**src, "id": did, "turns": turns}
        lang = "zh" if r.random() < spec.zh_share else "en"
        if lang == "zh":
            scene = r.choices(list(SCENES), weights=list(SCENES.values()))[0]
            turns, label = self.zh_dialogue(scene), scene
        else:
            turns, label = self.en_dialogue()
            scene = label or "general_inquiry"
        if r.random() < spec.pii_share:
            self.add_pii(turns, lang)
            self.stats["with_pii"] += 1
        self.stats[f"lang_{lang}"] += 1
        self.stats[f"scene_{scene}"] += 1
        rec: dict = {"id": did, "turns": turns}
        if label and r.random() < spec.labelled_share:
            rec["scene"] = label
        if len(self.kept) < 2000:
            self.kept.append(rec)
        elif r.random() < 0.01:
            self.kept[r.randrange(len(self.kept))] = rec
        return rec


def generate(spec: CorpusSpec, out: Path) -> dict:
    """Write the corpus under ``out`` (skipped when ``corpus.meta`` there already names this spec)."""
    meta_path = out / "corpus.meta"  # not .json: the jsonl adapter reads .json exports
    if meta_path.exists() and json.loads(meta_path.read_text())["spec"] == asdict(spec):
        return json.loads(meta_path.read_text())
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("part-*.jsonl"):
        old.unlink()
    gen = Generator(spec)
    start = time.perf_counter()
    turns = size = 0
    fh = None
    for i in range(spec.n):
        if i % spec.part_size == 0:
            if fh:
                fh.close()
            fh = (out / f"part-{i // spec.part_size:05d}.jsonl").open("w", encoding="utf-8")
        rec = gen.dialogue(i)
        line = json.dumps(rec, ensure_ascii=False) + "\n"
        fh.write(line)  # type: ignore[union-attr]
        turns += len(rec["turns"])
        size += len(line.encode())
    if fh:
        fh.close()
    meta = {"spec": asdict(spec), "dialogues": spec.n, "turns": turns, "bytes": size, "stats": dict(sorted(gen.stats.items())),
            "seconds": round(time.perf_counter() - start, 1)}
    meta_path.write_text(json.dumps(meta, indent=1))
    return meta


def source_config(name: str, uri: Path) -> dict:
    """The ``sources:`` entry that reads a generated corpus."""
    return {"name": name, "adapter": "jsonl", "uri": str(uri), "domain": "real_estate",
            "scene_map": {s: s for s in SCENES}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, required=True)
    ap.add_argument("--out", type=Path, required=True)
    for f in ("seed", "zh_share", "pii_share", "exact_dup_share", "near_dup_share", "labelled_share", "part_size"):
        default = getattr(CorpusSpec, f)
        ap.add_argument("--" + f.replace("_", "-"), type=type(default), default=default)
    a = ap.parse_args()
    spec = CorpusSpec(**{k: v for k, v in vars(a).items() if k != "out"})
    print(json.dumps(generate(spec, a.out), indent=1))


if __name__ == "__main__":
    main()
