"""Near-duplicate detection with MinHash/LSH on character shingles, English and Chinese."""

from __future__ import annotations

import random
import time

from dialinsight_core.dedup import LSHIndex, MinHasher, similarity

EN = ("Customer: Hello, I want to schedule a viewing at North Hill Apartments for Saturday at 4 pm. "
      "Agent: Could you give me your name, please? Customer: [NAME_1]. Agent: Have you already paid the "
      "application fee for the apartment? Customer: Yes, I paid it last week. Agent: Great, there is still a "
      "viewing available at that time. Would you like me to book it for you? Customer: Yes please.")
ZH = ("客户：您好，我想租一套两室一厅，预算每月4500元左右，最好在地铁附近，有电梯。经纪人：好的，阳光花园有一套两室一厅，"
      "89平方米，在12楼，朝南阳台，月租4300元，押金两个月。客户：听起来不错，周二下午三点能去看房吗？经纪人：可以的，"
      "我帮您预约周二下午三点，到时候在小区门口见。客户：好的，谢谢。")


def test_small_edits_are_near_duplicates_en_and_zh():
    mh = MinHasher()
    en_edit = EN.replace("Saturday", "Sunday").replace("last week", "yesterday")
    zh_edit = ZH.replace("4300", "4200").replace("周二", "周三", 1)
    assert similarity(mh.signature(EN), mh.signature(en_edit)) >= 0.8
    assert similarity(mh.signature(ZH), mh.signature(zh_edit)) >= 0.8


def test_same_template_different_dialogue_is_not_a_duplicate():
    mh = MinHasher()
    other = ("Customer: Hi, I'd like to see Shadyside Apartments on Wednesday at 6 pm. Agent: Could you give me your "
             "name, please? Customer: [NAME_1]. Agent: Have you already paid the application fee for the apartment? "
             "Customer: No, not yet. Agent: I am sorry, but you need to pay the fee before a viewing can be booked.")
    zh_other = ("客户：你好，我想买一套三室两厅，预算三百万，要学区房。经纪人：好的，海景花园有一套三室两厅，120平方米，"
                "在8楼，有车位，总价310万。客户：能便宜一点吗？经纪人：我帮您问问业主，明天给您回复。")
    assert similarity(mh.signature(EN), mh.signature(other)) < 0.5
    assert similarity(mh.signature(ZH), mh.signature(zh_other)) < 0.5


def test_lsh_finds_the_duplicate_and_scales():
    mh = MinHasher()
    rng = random.Random(0)
    words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(3, 9))) for _ in range(3000)]
    docs = [" ".join(rng.choice(words) for _ in range(30)) for _ in range(10_000)]
    docs.append(docs[123].replace(docs[123][:5], docs[123][:5].upper()) + " extra")
    idx = LSHIndex(threshold=0.8)
    start = time.perf_counter()
    hits = []
    for i, d in enumerate(docs):
        sig = mh.signature(d)
        found = idx.query(sig)
        if found:
            hits.append((i, found[0][0]))
        idx.add(str(i), sig)
    elapsed = time.perf_counter() - start
    assert hits == [(10_000, "123")]
    print(f"10k documents indexed and queried in {elapsed:.2f} s")  # the benchmark lives in benchmarks/


def test_signatures_are_stable_across_instances():
    assert (MinHasher().signature(ZH) == MinHasher().signature(ZH)).all()
