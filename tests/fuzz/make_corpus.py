#!/usr/bin/env python3
"""Writes the seed corpus of the fuzz targets into tests/fuzz/corpus/<target>/.

shm_ring: written here, in the step format fuzz_shm_ring.c reads (its header
    comment is the reference): honest traffic both ways (bytes, loans by
    reference, releases, box messages among ring records, the ring wrapping)
    and hostile segments (positions out of range, a record of no known type,
    a REF outside the pool or of a slot in use, a RELEASE of nothing lent or
    twice, a box message out of sequence, of no or too many bytes, placed
    behind head or inside a record, or acknowledging what was never sent,
    scribbles).
reassembly: written here, in the record format fuzz_reassembly.c reads (its
    header comment is the reference): a handful of valid conversations (whole
    messages, fragmented ones, channels interleaved, credit consumed and
    granted) and near-valid ones that each break one rule of reassembly.h
    (over credit, over the memory budget, over max_message, out of order, a
    second first fragment, a size mismatch, an unknown channel, the pool
    exhausted), and sessions resumed mid-message. The files are deterministic: running this again gives the
    same bytes.
frame, handshake: written by the C generator fuzz_make_corpus (make_corpus.c)
    from the real encoders and the harness's secret, which this script runs
    when given the fuzz build directory (--build DIR); HELLO nonces are random,
    so those files change on every run.

usage: tests/fuzz/make_corpus.py [--build BUILD_DIR] [--out CORPUS_DIR]
"""
import argparse
import pathlib
import struct
import subprocess
import sys

HERE = pathlib.Path(__file__).resolve().parent

# ---- fuzz_reassembly's input format -------------------------------------------

# Channel selectors (index into fuzz_reassembly.c's channel_ids: 0, 1, 7, 300
# configured, 9 not) and configuration selectors (its configure()).
CH0, CH1, CH7, CH300, UNKNOWN = range(5)
PLAIN = 0x00      # max_message: ch0 1, ch1 100, ch7 4096, ch300 65536; no budget, no credit
CREDIT = 0xAA     # ch0 4096 with an 8192 window, ch1 65536/131072, ch7 1/2, ch300 100/200
BUDGET = 0xFF     # ch0 65536, budget 32769, window 131072; ch1 1; ch7 100; ch300 4096
ALL_LARGE = 0x1B  # every channel 65536; ch0 and ch7 with a 32769 budget


def payload(n, seed=0):
    return bytes((seed + 7 * i) & 0xFF for i in range(n))


def fragment(ch, msg_id, offset, total, data, first=None, last=None, length=None):
    """A FRAGMENT record; first and last follow from the positions unless given."""
    first = offset == 0 if first is None else first
    last = offset + len(data) == total if last is None else last
    flags = (1 if first else 0) | (2 if last else 0)
    n = len(data) if length is None else length
    return struct.pack("<BBBBHHH", 0, ch, msg_id, flags, offset, total, n) + data


def whole(ch, msg_id, data):
    return fragment(ch, msg_id, 0, len(data), data)


def split(ch, msg_id, data, pieces):
    """The fragments of one message cut into equal pieces (the last takes the rest)."""
    size = max(1, len(data) // pieces)
    out, at = b"", 0
    while at < len(data):
        end = len(data) if len(data) - at < 2 * size else at + size
        out += fragment(ch, msg_id, at, len(data), data[at:end])
        at = end
    return out


def consumed(ch, n):
    return struct.pack("<BBH", 1, ch, n)


def grant(ch, threshold):
    return struct.pack("<BBH", 2, ch, threshold)


def resume(ch):
    return struct.pack("<BB", 7, ch)


def seed(selector, *records):
    return bytes([selector]) + b"".join(records)


def reassembly_seeds():
    m300 = payload(300, 1)
    big = payload(2000, 3)
    return {
        # Valid.
        "whole_and_empty": seed(PLAIN, whole(CH1, 1, payload(50)), whole(CH1, 2, b""),
                                whole(CH0, 3, b"x")),
        "fragmented": seed(PLAIN, split(CH7, 5, m300, 3)),
        "interleaved": seed(PLAIN, fragment(CH7, 9, 0, 300, m300[:100]),
                            whole(CH300, 1, payload(40, 2)), fragment(CH7, 9, 100, 300, m300[100:200]),
                            whole(CH1, 4, payload(10)), fragment(CH7, 9, 200, 300, m300[200:])),
        "credit_flow": seed(CREDIT, whole(CH0, 1, big), whole(CH0, 2, big), consumed(CH0, 2000),
                            consumed(CH0, 2000), grant(CH0, 1000), whole(CH0, 3, big),
                            whole(CH0, 4, big), whole(CH0, 5, big), consumed(CH0, 6000),
                            grant(CH0, 0), grant(UNKNOWN, 1)),
        "budget_fragments": seed(BUDGET, split(CH0, 1, payload(3000, 4), 4),
                                 split(CH300, 2, payload(500, 5), 5)),
        # Near-valid: each breaks one rule.
        "over_credit": seed(CREDIT, *(whole(CH0, i, big) for i in range(5))),
        "over_budget": seed(BUDGET, fragment(CH0, 1, 0, 40000, payload(10), last=False)),
        "over_max_message": seed(PLAIN, whole(CH0, 1, b"ab")),
        "out_of_order": seed(PLAIN, fragment(CH7, 1, 0, 300, m300[:100]),
                             fragment(CH7, 1, 200, 300, m300[200:])),
        "continuation_first": seed(PLAIN, fragment(CH7, 1, 100, 300, m300[100:200])),
        "unexpected_first": seed(PLAIN, fragment(CH7, 1, 0, 300, m300[:100]),
                                 fragment(CH7, 2, 0, 300, m300[:100])),
        "size_mismatch": seed(PLAIN, fragment(CH7, 1, 0, 300, m300[:100]),
                              fragment(CH7, 1, 100, 400, m300[100:200])),
        "last_too_early": seed(PLAIN, fragment(CH7, 1, 0, 300, m300[:100], last=True)),
        "unknown_channel": seed(PLAIN, whole(UNKNOWN, 1, payload(5)), consumed(UNKNOWN, 5)),
        "consumed_too_much": seed(PLAIN, whole(CH1, 1, payload(20)), consumed(CH1, 1000)),
        "pool_exhausted": seed(ALL_LARGE, fragment(CH1, 1, 0, 60000, payload(1), last=False),
                               fragment(CH300, 2, 0, 60000, payload(1), last=False),
                               fragment(CH0, 3, 0, 30000, payload(1), last=False),
                               fragment(CH7, 4, 0, 30000, payload(1), last=False)),
        "truncated": seed(PLAIN, whole(CH1, 1, payload(30)))[:-10],
        # Sessions resumed mid-message: the message restarts whole, and a
        # continuation of the dropped one is refused.
        "resume_mid_message": seed(CREDIT, whole(CH0, 1, big),
                                   fragment(CH300, 2, 0, 100, payload(40)), resume(CH300),
                                   resume(CH0), fragment(CH300, 2, 0, 100, payload(100)),
                                   whole(CH0, 3, big), consumed(CH0, 2000), grant(CH0, 0),
                                   resume(UNKNOWN)),
        "resume_continuation": seed(PLAIN, fragment(CH7, 1, 0, 300, m300[:100]), resume(CH7),
                                    fragment(CH7, 1, 100, 300, m300[100:200])),
    }


# ---- fuzz_shm_ring's input format ---------------------------------------------

(SHM_TAIL0, SHM_HEAD1, SHM_RECV, SHM_SEND, SHM_POKE, SHM_PEER_SEND, SHM_PEER_RECV, SHM_RELEASE,
 SHM_BOX) = range(9)
SHM_DATA0 = 4096          # ring 0's bytes in the segment (transport/shm_ring.h)
REC_BYTES, REC_REF, REC_RELEASE = 1, 2, 3


def step(op, value=0):
    return struct.pack("<BQ", op, value & (2**64 - 1))


def lend(slot, offset, n):
    """SEND / PEER_SEND operand asking for a REF (top bit) of n bytes at offset."""
    return (1 << 63) | (slot << 32) | ((offset & 0xFFFF) << 16) | ((n - 1) & 0xFFFF)


def poke_words(pos, *words):
    """The hostile peer writes 8-byte record words into ring 0 at pos, byte by byte."""
    out = b""
    for i, word in enumerate(words):
        for j, byte in enumerate(struct.pack("<Q", word)):
            at = SHM_DATA0 + pos + 8 * i + j
            out += step(SHM_POKE, (byte << 56) | at)
    return out


def boxed(n):
    """SEND / PEER_SEND operand asking for n bytes through the box (bit 62)."""
    return (1 << 62) | ((n - 1) & 0xFFFF)


def box_word(seq_step, length):
    """BOX operand: box 0's word, seq the receiver's last taken plus seq_step."""
    return (length << 32) | seq_step


def box_at(pos):
    return (1 << 62) | pos


def box_taken(seq):
    return (2 << 62) | seq


def rec(kind, arg):
    return kind | (arg << 32)


def shm_seed(ring_sel, *steps):
    return bytes([ring_sel]) + b"".join(steps)


def shm_ring_seeds():
    return {
        # Honest.
        "honest_both_ways": shm_seed(0, step(SHM_PEER_SEND, 1000), step(SHM_RECV),
                                     step(SHM_SEND, 3000), step(SHM_PEER_RECV),
                                     step(SHM_PEER_SEND, lend(3, 100, 2000)), step(SHM_RECV),
                                     step(SHM_RELEASE), step(SHM_PEER_RECV)),
        "loans_both_ways": shm_seed(1, step(SHM_SEND, lend(0, 0, 65535)),
                                    step(SHM_SEND, lend(1, 5, 8)), step(SHM_SEND, 100),
                                    step(SHM_PEER_RECV), step(SHM_RECV),
                                    step(SHM_PEER_SEND, lend(7, 9, 1)),
                                    step(SHM_PEER_SEND, lend(8, 9, 1)), step(SHM_RECV),
                                    step(SHM_RELEASE), step(SHM_PEER_RECV),
                                    step(SHM_SEND, lend(0, 0, 10)), step(SHM_PEER_RECV)),
        "wrap_64k": shm_seed(4, *(step(SHM_PEER_SEND, 40000) + step(SHM_RECV) +
                                  step(SHM_SEND, 30000) + step(SHM_PEER_RECV)
                                  for _ in range(6))),
        # Hostile positions.
        "tail_too_far": shm_seed(0, step(SHM_PEER_SEND, 100), step(SHM_TAIL0, 8192),
                                 step(SHM_RECV)),
        "tail_backwards": shm_seed(0, step(SHM_PEER_SEND, 500), step(SHM_RECV),
                                   step(SHM_TAIL0, 8), step(SHM_RECV)),
        "tail_unaligned": shm_seed(0, step(SHM_PEER_SEND, 100), step(SHM_TAIL0, 13),
                                   step(SHM_RECV)),
        "head_ahead": shm_seed(0, step(SHM_SEND, 100), step(SHM_HEAD1, 4096),
                               step(SHM_SEND, 10)),
        # Hostile records.
        "record_unknown": shm_seed(0, poke_words(0, rec(9, 0)), step(SHM_TAIL0, 8),
                                   step(SHM_RECV)),
        "ref_out_of_pool": shm_seed(0, poke_words(0, rec(REC_REF, 0), 65530 | (100 << 32)),
                                    step(SHM_TAIL0, 16), step(SHM_RECV)),
        "ref_slot_range": shm_seed(0, poke_words(0, rec(REC_REF, 5000), 0 | (8 << 32)),
                                   step(SHM_TAIL0, 16), step(SHM_RECV)),
        "ref_slot_in_use": shm_seed(0, poke_words(0, rec(REC_REF, 2), 0 | (8 << 32),
                                                  rec(REC_REF, 2), 8 | (8 << 32)),
                                    step(SHM_TAIL0, 32), step(SHM_RECV)),
        "release_not_lent": shm_seed(0, poke_words(0, rec(REC_RELEASE, 4)), step(SHM_TAIL0, 8),
                                     step(SHM_RECV)),
        "release_twice": shm_seed(0, step(SHM_SEND, lend(6, 0, 64)),
                                  poke_words(0, rec(REC_RELEASE, 6), rec(REC_RELEASE, 6)),
                                  step(SHM_TAIL0, 8), step(SHM_RECV), step(SHM_TAIL0, 16),
                                  step(SHM_RECV)),
        # The express box: honest, between ring records, and hostile fields.
        "box_honest": shm_seed(0, step(SHM_PEER_SEND, boxed(40)), step(SHM_RECV),
                               step(SHM_SEND, boxed(96)), step(SHM_PEER_SEND, 1000),
                               step(SHM_PEER_SEND, boxed(8)), step(SHM_PEER_SEND, boxed(104)),
                               step(SHM_PEER_SEND, 300), step(SHM_PEER_RECV), step(SHM_RECV),
                               step(SHM_PEER_SEND, boxed(64)), step(SHM_RECV),
                               step(SHM_SEND, boxed(8)), step(SHM_PEER_RECV)),
        "box_seq_skips": shm_seed(0, step(SHM_BOX, box_word(2, 40)), step(SHM_RECV)),
        "box_len_zero": shm_seed(0, step(SHM_BOX, box_word(1, 0)), step(SHM_RECV)),
        "box_len_over": shm_seed(0, step(SHM_BOX, box_word(1, 105)), step(SHM_RECV)),
        "box_at_behind": shm_seed(0, step(SHM_PEER_SEND, 100), step(SHM_RECV),
                                  step(SHM_BOX, box_at(0)), step(SHM_BOX, box_word(1, 8)),
                                  step(SHM_RECV)),
        "box_at_inside": shm_seed(0, step(SHM_PEER_SEND, 100), step(SHM_BOX, box_at(16)),
                                  step(SHM_BOX, box_word(1, 8)), step(SHM_RECV)),
        "box_ack_unsent": shm_seed(0, step(SHM_BOX, box_taken(5)), step(SHM_BOX, box_word(1, 8)),
                                   step(SHM_RECV)),
        "bytes_cut": shm_seed(0, poke_words(0, rec(REC_BYTES, 100)), step(SHM_TAIL0, 64),
                              step(SHM_RECV)),
        "scribble": shm_seed(2, step(SHM_PEER_SEND, 3000), step(SHM_POKE, (0x5A << 56) | 4100),
                             step(SHM_POKE, (0x03 << 56) | 4096), step(SHM_RECV),
                             step(SHM_SEND, lend(1, 0, 100)), step(SHM_POKE, (0x77 << 56) | 8200),
                             step(SHM_PEER_RECV)),
    }


def write_dir(directory, files):
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in sorted(files.items()):
        (directory / name).write_bytes(data)
    print(f"{directory}: {len(files)} seeds")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", type=pathlib.Path,
                        help="fuzz build directory, to also write the frame and handshake "
                             "seeds with its fuzz_make_corpus")
    parser.add_argument("--out", type=pathlib.Path, default=HERE / "corpus")
    args = parser.parse_args()

    write_dir(args.out / "reassembly", reassembly_seeds())
    write_dir(args.out / "shm_ring", shm_ring_seeds())
    if args.build:
        generator = args.build / "tests" / "fuzz" / "fuzz_make_corpus"
        if not generator.exists():
            sys.exit(f"{generator} not found: build with -Dfuzz=true first")
        subprocess.run([str(generator), str(args.out)], check=True)
        for target in ("frame", "handshake"):
            count = len(list((args.out / target).iterdir()))
            print(f"{args.out / target}: {count} seeds (fuzz_make_corpus)")


if __name__ == "__main__":
    main()
