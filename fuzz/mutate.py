#!/usr/bin/python3
"""Hostile variants of volt's checkpoint fuzz corpus, for fuzz/replay.sh.

    mutate.py CORPUS_DIR OUT_DIR [--format torch_file|safetensors] [--budget N]

Writes into OUT_DIR (emptied first), for every seed file of CORPUS_DIR:
  - truncations: every length for small files, a stride plus the structural boundaries for bigger ones;
  - single bit flips at offsets drawn from a fixed-seed generator (biased to the headers);
  - torch files: zip end-of-central-directory / ZIP64 / central-directory / local-header fields (sizes,
    offsets, counts, name and extra lengths) replaced by huge and off-by-one values, duplicate entries,
    overlapping entries, and pickle mutations: length prefixes (BINUNICODE, BINBYTES, LONG1/LONG4, FRAME,
    memo indices) made huge, integers (storage numel, view offsets, sizes, strides) replaced by hostile
    values, storage types swapped, opcodes dropped or duplicated;
  - safetensors: the header length replaced by huge and off-by-one values, data_offsets made overlapping,
    reversed, out of range or overflowing, shapes made huge, dtypes unknown, fields missing or doubled,
    metadata malformed, the header deeply nested, NUL bytes and invalid UTF-8 inserted.
Plus a set of synthetic hostile files (exponential shared-reference pickles, deep nesting, cyclic
containers...) that do not derive from a seed. Deterministic: the same corpus gives the same files.
Only the standard library is used (no torch): it runs under any python3.
"""
import argparse
import json
import os
import random
import shutil
import struct
import sys
import zlib

U64 = (1 << 64) - 1

# ------------------------------------------------------------------------------------------------ zip


def write_zip(entries, zip64=False, align=64, comment=b""):
    """A stored-only zip as torch.save writes it: [(name, bytes)], data aligned to `align` bytes (1: none).
    zip64=True writes ZIP64 central-directory fields and the ZIP64 end records even for a small archive."""
    out = bytearray()
    central = []
    for name, data in entries:
        name_b = name.encode() if isinstance(name, str) else name
        crc = zlib.crc32(data) & 0xFFFFFFFF
        offset = len(out)
        unpadded = offset + 30 + len(name_b) + 4
        padding = (align - unpadded % align) % align if align > 1 else 0
        extra = struct.pack("<HH", 0x4246, padding) + b"Z" * padding if align > 1 else b""
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 0, 0, 0x21, crc, len(data), len(data),
                           len(name_b), len(extra))
        out += name_b + extra + data
        central.append((name_b, crc, len(data), offset))
    cd_offset = len(out)
    for name_b, crc, size, offset in central:
        if zip64:
            extra = struct.pack("<HHQQQ", 1, 24, size, size, offset)
            out += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 45, 45, 0, 0, 0, 0x21, crc, 0xFFFFFFFF,
                               0xFFFFFFFF, len(name_b), len(extra), 0, 0, 0, 0, 0xFFFFFFFF)
        else:
            extra = b""
            out += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 0, 0, 0x21, crc, size, size,
                               len(name_b), 0, 0, 0, 0, 0, offset)
        out += name_b + extra
    cd_size = len(out) - cd_offset
    count = len(central)
    if zip64:
        record = len(out)
        out += struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, count, count, cd_size, cd_offset)
        out += struct.pack("<IIQI", 0x07064B50, 0, record, 1)
        out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, len(comment))
    else:
        out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, count, count, cd_size, cd_offset, len(comment))
    return bytes(out + comment)


class Zip:
    """A tolerant parse of a zip's structures: where each field lives, for in-place patching."""

    def __init__(self, data):
        self.data = data
        self.eocd = data.rfind(b"PK\x05\x06")
        if self.eocd < 0 or self.eocd + 22 > len(data):
            raise ValueError("no end record")
        count, cd_size, cd_offset = struct.unpack_from("<HII", data, self.eocd + 10)
        self.zip64_record = None
        self.locator = None
        if self.eocd >= 20 and data[self.eocd - 20:self.eocd - 16] == b"PK\x06\x07":
            self.locator = self.eocd - 20
            record = struct.unpack_from("<Q", data, self.locator + 8)[0]
            if record + 56 <= len(data) and data[record:record + 4] == b"PK\x06\x06":
                self.zip64_record = record
                count, _, cd_size, cd_offset = struct.unpack_from("<QQQQ", data, record + 24)
        self.cd_offset, self.cd_size = cd_offset, cd_size
        self.entries = []  # (central offset, name, local offset, data offset, size, zip64 extra offset)
        at = cd_offset
        for _ in range(count):
            if at + 46 > len(data) or data[at:at + 4] != b"PK\x01\x02":
                raise ValueError("bad central entry")
            size, _, name_len, extra_len, comment_len = struct.unpack_from("<IIHHH", data, at + 20)
            local = struct.unpack_from("<I", data, at + 42)[0]
            name = data[at + 46:at + 46 + name_len]
            extra_at = at + 46 + name_len
            zip64_extra = None
            e = 0
            while e + 4 <= extra_len:
                tag, length = struct.unpack_from("<HH", data, extra_at + e)
                if tag == 1:
                    zip64_extra = extra_at + e + 4
                    size = struct.unpack_from("<Q", data, zip64_extra)[0]
                    if length >= 24:
                        local = struct.unpack_from("<Q", data, zip64_extra + 16)[0]
                e += 4 + length
            lname, lextra = struct.unpack_from("<HH", data, local + 26)
            self.entries.append((at, name, local, local + 30 + lname + lextra, size, zip64_extra))
            at += 46 + name_len + extra_len + comment_len

    def records(self):
        return [(name, self.data[start:start + size]) for _, name, _, start, size, _ in self.entries]

    def entry(self, suffix):
        for e in self.entries:
            if e[1].endswith(suffix):
                return e
        return None


def patch(data, offset, width, value):
    out = bytearray(data)
    out[offset:offset + width] = (value & ((1 << (8 * width)) - 1)).to_bytes(width, "little")
    return bytes(out)


def hostile_values(width, current, file_size):
    top = (1 << (8 * width)) - 1
    values = {0, 1, top, top - 1, top >> 1, current + 1, max(current - 1, 0), current * 2 + 1}
    if width >= 4:
        values |= {file_size, file_size + 1, file_size - 1, 0x7FFFFFFF, 0x80000000}
    if width >= 8:
        values |= {1 << 32, 1 << 62, 1 << 63, (1 << 63) - 1, U64 - current}
    values.discard(current)
    return sorted(v & top for v in values)


def zip_field_mutations(data, rng, cap):
    """(tag, bytes) with one structural field of the archive replaced."""
    try:
        z = Zip(data)
    except Exception:
        return []
    fields = []  # (tag, offset, width)
    e = z.eocd
    fields += [("eocd_disk", e + 4, 2), ("eocd_cd_disk", e + 6, 2), ("eocd_disk_count", e + 8, 2),
               ("eocd_count", e + 10, 2), ("eocd_cd_size", e + 12, 4), ("eocd_cd_offset", e + 16, 4),
               ("eocd_comment_len", e + 20, 2)]
    if z.locator is not None:
        fields += [("locator_record", z.locator + 8, 8), ("locator_disks", z.locator + 16, 4)]
    if z.zip64_record is not None:
        r = z.zip64_record
        fields += [("zip64_record_size", r + 4, 8), ("zip64_count", r + 32, 8), ("zip64_cd_size", r + 40, 8),
                   ("zip64_cd_offset", r + 48, 8)]
    # The pickle's entry, the first and the last storage, and the first entry.
    chosen = []
    for suffix in (b"data.pkl", b"/data/0"):
        found = z.entry(suffix)
        if found is not None and found not in chosen:
            chosen.append(found)
    for found in (z.entries[:1] + z.entries[-1:]):
        if found not in chosen:
            chosen.append(found)
    for at, name, local, _, _, zip64_extra in chosen:
        tag = name.decode("latin1").replace("/", "_")
        fields += [(f"cd_{tag}_flags", at + 8, 2), (f"cd_{tag}_method", at + 10, 2),
                   (f"cd_{tag}_compressed", at + 20, 4), (f"cd_{tag}_uncompressed", at + 24, 4),
                   (f"cd_{tag}_name_len", at + 28, 2), (f"cd_{tag}_extra_len", at + 30, 2),
                   (f"cd_{tag}_comment_len", at + 32, 2), (f"cd_{tag}_local", at + 42, 4),
                   (f"local_{tag}_sig", local, 4), (f"local_{tag}_name_len", local + 26, 2),
                   (f"local_{tag}_extra_len", local + 28, 2)]
        if zip64_extra is not None:
            fields += [(f"zip64x_{tag}_uncompressed", zip64_extra, 8), (f"zip64x_{tag}_compressed", zip64_extra + 8, 8),
                       (f"zip64x_{tag}_local", zip64_extra + 16, 8), (f"zip64x_{tag}_len", zip64_extra - 2, 2)]
    out = []
    for tag, offset, width in fields:
        if offset + width > len(data):
            continue
        current = int.from_bytes(data[offset:offset + width], "little")
        for value in hostile_values(width, current, len(data)):
            out.append((f"{tag}={value}", patch(data, offset, width, value)))
    # Stored entries must agree on both sizes: grow both together, so the size check itself is passed.
    for at, name, _, _, size, zip64_extra in chosen:
        tag = name.decode("latin1").replace("/", "_")
        if zip64_extra is None:
            for value in (size + 1, size + 4096, 0x7FFFFFFF, 0xFFFFFFFE, len(data)):
                out.append((f"cd_{tag}_sizes={value}", patch(patch(data, at + 20, 4, value), at + 24, 4, value)))
        else:
            for value in (size + 1, 1 << 32, 1 << 63, U64, U64 - 8):
                d = patch(patch(data, zip64_extra, 8, value), zip64_extra + 8, 8, value)
                out.append((f"zip64x_{tag}_sizes={value}", d))
    rng.shuffle(out)
    return out[:cap]


def zip_rebuild_mutations(data):
    """Whole-archive rewrites: duplicate and overlapping entries, missing records, ZIP64 and unaligned."""
    try:
        z = Zip(data)
        records = z.records()
    except Exception:
        return []
    out = []
    pkl = [r for r in records if r[0].endswith(b"data.pkl")]
    storages = [r for r in records if b"/data/" in r[0]]
    out.append(("dup_pkl", write_zip(records + pkl)))
    out.append(("dup_pkl_first", write_zip(pkl + records)))
    if storages:
        out.append(("dup_storage", write_zip(records + storages[:1])))
        out.append(("dup_storage_other_data", write_zip(records + [(storages[0][0], storages[0][1] + b"\0" * 64)])))
        out.append(("missing_storage", write_zip([r for r in records if r[0] != storages[0][0]])))
        out.append(("short_storage", write_zip([(n, d[:len(d) // 2] if n == storages[0][0] else d) for n, d in records])))
    out.append(("missing_pkl", write_zip([r for r in records if not r[0].endswith(b"data.pkl")])))
    out.append(("zip64", write_zip(records, zip64=True)))
    out.append(("unaligned", write_zip(records, align=1)))
    out.append(("unaligned_zip64", write_zip(records, zip64=True, align=1)))
    out.append(("no_folder", write_zip([(n.split(b"/", 1)[-1], d) for n, d in records])))
    out.append(("empty_zip", write_zip([])))
    out.append(("comment", write_zip(records, comment=b"PK\x05\x06" + b"\0" * 18)))
    out.append(("big_endian", write_zip(records + [(records[0][0].split(b"/")[0] + b"/byteorder", b"big")])))
    out.append(("torchscript", write_zip(records + [(records[0][0].split(b"/")[0] + b"/constants.pkl", b"\x80\x02).")])))
    # Two central entries pointing at the same local header (overlapping records).
    if len(z.entries) >= 2:
        first, second = z.entries[0], z.entries[1]
        out.append(("overlap_local", patch(data, second[0] + 42, 4, first[2])))
        # The central directory overlapping the data: its offset moved back into the last record.
        out.append(("overlap_cd", patch(data, z.eocd + 16, 4, max(z.cd_offset - 8, 0))))
    return out


# --------------------------------------------------------------------------------------------- pickle


def pickle_ops(payload):
    """(position, opcode byte, argument start, argument end) for each instruction, tolerant of junk."""
    import pickletools
    import io
    ops = []
    try:
        for op, _, pos in pickletools.genops(io.BytesIO(payload)):
            ops.append((pos, op.code.encode("latin1")[0]))
    except Exception:
        pass
    out = []
    for i, (pos, code) in enumerate(ops):
        end = ops[i + 1][0] if i + 1 < len(ops) else len(payload)
        out.append((pos, code, pos + 1, end))
    return out


def encode_int(value, form):
    if form == "K" and 0 <= value < 256:
        return b"K" + bytes([value])
    if form == "M" and 0 <= value < 65536:
        return b"M" + struct.pack("<H", value)
    if form == "J" and -(1 << 31) <= value < (1 << 31):
        return b"J" + struct.pack("<i", value)
    n = max(1, (value.bit_length() + 8) // 8)
    raw = value.to_bytes(n, "little", signed=True)
    if form == "LONG4":
        return b"\x8b" + struct.pack("<I", len(raw)) + raw
    if form == "I":
        return b"I" + str(value).encode() + b"\n"
    return b"\x8a" + bytes([len(raw)]) + raw


HOSTILE_INTS = [-1, -(1 << 63), (1 << 63) - 1, 1 << 62, 1 << 31, (1 << 32) + 1, 1 << 40, 3 << 61]


def pickle_mutations(payload, rng, cap):
    """(tag, new payload) variants of one pickle."""
    ops = pickle_ops(payload)
    out = []
    targeted = []  # always kept: the storage numel and the view numbers
    int_codes = {ord("K"), ord("M"), ord("J"), 0x8A}
    for i, (pos, code, arg, end) in enumerate(ops):
        # Length prefixes and indices, patched in place.
        widths = {ord("X"): 4, ord("B"): 4, ord("T"): 4, 0x8C: 1, ord("C"): 1, ord("U"): 1, 0x8D: 8, 0x8E: 8,
                  0x8A: 1, 0x8B: 4, 0x95: 8, ord("q"): 1, ord("r"): 4, ord("h"): 1, ord("j"): 4, 0x80: 1}
        if code in widths:
            w = widths[code]
            current = int.from_bytes(payload[arg:arg + w], "little")
            remaining = len(payload) - arg - w
            for value in sorted({remaining + 1, remaining, (1 << (8 * w)) - 1, (1 << (8 * w - 1)) - 1,
                                 (1 << (8 * w - 1)), current + 1} - {current}):
                if value < (1 << (8 * w)):
                    out.append((f"op{pos}_{code:02x}_len={value}", patch(payload, arg, w, value)))
        if code in int_codes:
            # Where this integer sits: the numel just before TUPLE + BINPERSID is the storage size.
            is_numel = i + 2 < len(ops) and ops[i + 1][1] == ord("t") and ops[i + 2][1] == ord("Q")
            after_persid = any(ops[j][1] == ord("Q") for j in range(max(0, i - 8), i))
            values = HOSTILE_INTS + [rng.randrange(1 << 16), -rng.randrange(1, 1 << 16)]
            for value in values:
                for form in ("LONG1", "J", "LONG4"):
                    if form == "J" and not -(1 << 31) <= value < (1 << 31):
                        continue
                    enc = encode_int(value, form)
                    variant = (f"op{pos}_int={value}_{form}", payload[:pos] + enc + payload[end:])
                    (targeted if (is_numel or after_persid) else out).append(variant)
            # Beyond 64 bits and a long LONG4.
            out.append((f"op{pos}_int=2^70", payload[:pos] + encode_int(1 << 70, "LONG1") + payload[end:]))
            out.append((f"op{pos}_long4_huge", payload[:pos] + b"\x8b\xff\xff\xff\x7f" + payload[end:]))
        # Dropping or doubling one instruction.
        out.append((f"op{pos}_drop", payload[:pos] + payload[end:]))
        out.append((f"op{pos}_dup", payload[:end] + payload[pos:end] + payload[end:]))
    # Storage types and rebuild functions swapped.
    for old, new in [(b"FloatStorage", b"DoubleStorage"), (b"FloatStorage", b"ComplexDoubleStorage"),
                     (b"FloatStorage", b"BoolStorage"), (b"FloatStorage", b"QInt8Storage"),
                     (b"LongStorage", b"ByteStorage"), (b"_rebuild_tensor_v2", b"_rebuild_tensor"),
                     (b"_rebuild_tensor_v2", b"_rebuild_parameter"), (b"_rebuild_tensor_v2", b"_rebuild_qtensor"),
                     (b"collections\nOrderedDict", b"builtins\nexec"), (b"storage", b"storagf")]:
        if old in payload:
            replaced = payload.replace(old, new, 1)
            # BINUNICODE lengths: keep the pickle well formed when the text changes length.
            at = payload.find(old)
            if payload[at - 5:at - 4] == b"X":
                replaced = replaced[:at - 4] + struct.pack("<I", len(new)) + replaced[at:]
            out.append((f"swap_{new.decode()}", replaced))
    rng.shuffle(targeted)
    rng.shuffle(out)
    return targeted[:cap // 2] + out[:cap]


def with_pickle(data, new_payload):
    """The archive with its data.pkl replaced (rebuilt when the length changes, patched in place if not)."""
    z = Zip(data)
    entry = z.entry(b"data.pkl")
    if entry is None:
        return None
    _, _, _, start, size, _ = entry
    if len(new_payload) == size:
        return data[:start] + new_payload + data[start + size:]
    return write_zip([(n, new_payload if n == entry[1] else d) for n, d in z.records()])


# ------------------------------------------------------------------------------- synthetic pickles


def synthetic_torch_files():
    """Hostile pickles written from scratch, each wrapped in an otherwise valid archive."""
    def archive(pkl, extra=()):
        return write_zip([("archive/data.pkl", pkl), ("archive/byteorder", b"little")] + list(extra) +
                         [("archive/version", b"3\n")])

    storage = b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpu"
    record0 = ("archive/data/0", struct.pack("<4f", 1, 2, 3, 4))

    def tensor(numel, offset, sizes, strides, key=b"0", cls=b"FloatStorage"):
        pkl = b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n((X\x07\x00\x00\x00storagectorch\n" + cls + b"\n"
        pkl += b"X" + struct.pack("<I", len(key)) + key + b"X\x03\x00\x00\x00cpu" + encode_int(numel, "LONG1") + b"tQ"
        pkl += encode_int(offset, "LONG1") + b"(" + b"".join(encode_int(s, "LONG1") for s in sizes) + b"t"
        pkl += b"(" + b"".join(encode_int(s, "LONG1") for s in strides) + b"t\x89ccollections\nOrderedDict\n)RtR"
        return pkl

    out = []
    # Exponential shared references: n DUP + TUPLE2 steps give a tuple of 2**n leaves in 2n bytes.
    bomb = b"X\x01\x00\x00\x00a" + b"2\x86" * 64
    out.append(("dag_value", archive(b"\x80\x02" + bomb + b".")))
    out.append(("dag_dict_key", archive(b"\x80\x02}" + bomb + b"Ns.")))
    out.append(("dag_ordereddict_key", archive(b"\x80\x02ccollections\nOrderedDict\n((" + bomb + b"Nt\x85\x85R.")))
    out.append(("dag_persid", archive(b"\x80\x02" + bomb + b"Q.")))
    out.append(("dag_reduce_unknown", archive(b"\x80\x02cos\nsystem\n" + bomb + b"\x85R.")))
    out.append(("dag_reduce_not_global", archive(b"\x80\x02" + bomb + b")R.")))
    out.append(("dag_rebuild_size", archive(tensor(4, 0, [], []).replace(b"(t\x89", b"(" + bomb + b"t\x89", 1) +
                                            b".", [record0])))
    out.append(("dag_list_bomb", archive(b"\x80\x02]" + b"2a" * 40 + b".")))
    # Nesting past the limit, and a stack of marks.
    out.append(("deep_lists", archive(b"\x80\x02" + b"]" * 3000 + b"a" * 2999 + b".")))
    out.append(("deep_tuples", archive(b"\x80\x02N" + b"\x85" * 3000 + b".")))
    out.append(("many_marks", archive(b"\x80\x02" + b"(" * 20000 + b"N.")))
    out.append(("many_dups", archive(b"\x80\x02N" + b"2" * 20000 + b"." )))
    out.append(("many_memo", archive(b"\x80\x02N" + b"\x94" * 20000 + b".")))
    # Cycles and mutation after freezing.
    out.append(("cycle_append", archive(b"\x80\x02]q\x00h\x00a.")))
    out.append(("cycle_dict", archive(b"\x80\x02}q\x00K\x01h\x00s.")))
    out.append(("mutate_frozen", archive(b"\x80\x02]q\x00\x85h\x00K\x01a0.")))
    out.append(("build_frozen", archive(b"\x80\x02cfoo\nBar\n)\x81q\x00\x85h\x00}b0.")))
    out.append(("additems_not_set", archive(b"\x80\x02](K\x01\x90.")))
    out.append(("frozenset_cycle", archive(b"\x80\x02\x8fq\x00(h\x00\x90.")))
    # Memo indices and text opcodes.
    out.append(("get_missing", archive(b"\x80\x02j\xff\xff\xff\xff.")))
    out.append(("put_text_huge", archive(b"\x80\x02Np99999999999999999999999\ng99999999999999999999999\n.")))
    out.append(("global_no_newline", archive(b"\x80\x02ctorch")))
    out.append(("int_text_huge", archive(b"\x80\x02I999999999999999999999999\n.")))
    out.append(("float_text_bad", archive(b"\x80\x02F1.5x\n.")))
    out.append(("proto_6", archive(b"\x80\x06N.")))
    out.append(("stop_empty", archive(b"\x80\x02.")))
    out.append(("stop_two", archive(b"\x80\x02NN.")))
    out.append(("no_stop", archive(b"\x80\x02N")))
    out.append(("empty_pickle", archive(b"")))
    out.append(("unicode8_huge", archive(b"\x80\x02\x8d" + struct.pack("<Q", U64) + b"ab.")))
    out.append(("bytes8_huge", archive(b"\x80\x02\x8e" + struct.pack("<Q", 1 << 63) + b"ab.")))
    out.append(("bytes4_huge", archive(b"\x80\x02B\xff\xff\xff\xffab.")))
    out.append(("bytes4_past_end", archive(b"\x80\x02B\x04\x00\x00\x00ab.")))
    out.append(("binstring_huge", archive(b"\x80\x02T\xff\xff\xff\x7fab.")))
    out.append(("unicode_huge", archive(b"\x80\x02X\xfe\xff\xff\xffab.")))
    out.append(("frame_huge", archive(b"\x80\x04\x95" + struct.pack("<Q", U64) + b"N.")))
    out.append(("long4_huge", archive(b"\x80\x02\x8b\xff\xff\xff\xff\x01.")))
    out.append(("long4_zero", archive(b"\x80\x02\x8b\x00\x00\x00\x00.")))
    out.append(("long1_9_bytes", archive(b"\x80\x02\x8a\x09" + b"\xff" * 8 + b"\x00.")))
    out.append(("latin1_bad", archive(b"\x80\x02c_codecs\nencode\nX\x02\x00\x00\x00\xc4\x80X\x06\x00\x00\x00latin1\x86R.")))
    out.append(("codecs_not_string", archive(b"\x80\x02c_codecs\nencode\nK\x01K\x02\x86R.")))
    out.append(("strict_unknown", archive(b"\x80\x02cos\nsystem\nX\x02\x00\x00\x00ls\x85R.")))
    out.append(("newobj_not_class", archive(b"\x80\x02K\x01)\x81.")))
    out.append(("stack_global_bad", archive(b"\x80\x02K\x01K\x02\x93.")))
    out.append(("setitems_odd", archive(b"\x80\x02}(K\x01u.")))
    out.append(("setitem_on_int", archive(b"\x80\x02K\x01K\x02K\x03s.")))
    out.append(("append_on_int", archive(b"\x80\x02K\x01K\x02a.")))
    out.append(("build_on_int", archive(b"\x80\x02K\x01K\x02b.")))
    out.append(("pop_empty", archive(b"\x80\x020.")))
    out.append(("pop_mark_empty", archive(b"\x80\x021.")))
    out.append(("pop_below_mark", archive(b"\x80\x02N(0.")))
    out.append(("dup_below_mark", archive(b"\x80\x02N(2.")))
    out.append(("bad_opcode", archive(b"\x80\x02\xff.")))
    out.append(("persid_not_tuple", archive(b"\x80\x02K\x01Q.")))
    out.append(("persid_bad_type", archive(b"\x80\x02(X\x07\x00\x00\x00storagecos\nsystem\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x04tQ.")))
    out.append(("persid_neg_numel", archive(b"\x80\x02(X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00\x00\x000X\x03\x00\x00\x00cpuJ\xff\xff\xff\xfftQ.", [record0])))
    out.append(("persid_int_key", archive(b"\x80\x02(X\x07\x00\x00\x00storagectorch\nFloatStorage\nK\x00X\x03\x00\x00\x00cpuK\x04tQ.", [record0])))
    # Views: numbers past the storage, overflowing, stride 0 with huge sizes, numel overflow.
    views = {
        "view_ok": (4, 0, [2, 2], [2, 1]),
        "view_past_end": (4, 1, [2, 2], [2, 1]),
        "view_offset_huge": (4, (1 << 63) - 1, [1], [1]),
        "view_offset_past_empty": (4, 5, [0], [1]),
        "view_negative_size": (4, 0, [-1], [1]),
        "view_negative_stride": (4, 3, [2], [-1]),
        "view_stride_overflow": (4, 0, [2, 2], [(1 << 63) - 1, 1]),
        "view_size_overflow": (4, 0, [1 << 62, 4], [0, 0]),
        "view_numel_overflow": (4, 0, [1 << 32, 1 << 32, 1 << 32], [0, 0, 0]),
        "view_numel_2_63": (4, 0, [1 << 31, 1 << 32], [0, 0]),
        "view_huge_expand": (4, 0, [1 << 20, 1 << 20, 1 << 20], [0, 0, 0]),
        "view_dims_mismatch": (4, 0, [2, 2], [1]),
        "view_many_dims": (4, 0, [1] * 200, [1] * 200),
        "storage_numel_huge": ((1 << 62), 0, [4], [1]),
        "storage_numel_2_63": ((1 << 63) - 1, 0, [4], [1]),
        "storage_numel_plus_one": (5, 0, [5], [1]),
        "storage_numel_bytes_overflow": ((1 << 62) + 1, 0, [1], [1]),
    }
    for name, (numel, offset, sizes, strides) in views.items():
        out.append((name, archive(tensor(numel, offset, sizes, strides) + b".", [record0])))
    out.append(("storage_missing_record", archive(tensor(4, 0, [4], [1], key=b"7") + b".", [record0])))
    out.append(("storage_key_traversal", archive(tensor(4, 0, [4], [1], key=b"../data.pkl") + b".", [record0])))
    out.append(("storage_complex_double", archive(tensor(1, 0, [1], [1], cls=b"ComplexDoubleStorage") + b".", [record0])))
    out.append(("storage_untyped", archive(tensor(16, 0, [16], [1], cls=b"UntypedStorage") + b".", [record0])))
    # The same storage key as two dtypes: the second view must still be checked against the bytes.
    two = (b"\x80\x02(" + tensor(4, 0, [4], [1])[2:] + tensor(2, 0, [2], [1], cls=b"DoubleStorage")[2:] + b"l.")
    out.append(("storage_two_dtypes", archive(two, [record0])))
    two = (b"\x80\x02(" + tensor(1, 0, [1], [1], cls=b"ByteStorage")[2:] + tensor(4, 0, [4], [1], cls=b"DoubleStorage")[2:] + b"l.")
    out.append(("storage_two_dtypes_grow", archive(two, [record0])))
    out.append(("requires_grad_int", archive(tensor(16, 0, [16], [1], cls=b"ByteStorage").replace(b"t\x89c", b"t\x88c") + b".", [record0])))
    out.append(("rebuild_few_args", archive(b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\nK\x01\x85R.")))
    out.append(("rebuild_param_bad", archive(b"\x80\x02ctorch._utils\n_rebuild_parameter\nK\x01K\x02\x86R.")))
    out.append(("rebuild_from_type_loop", archive(b"\x80\x02ctorch._tensor\n_rebuild_from_type_v2\nctorch._tensor\n_rebuild_from_type_v2\nN)\x87R.")))
    out.append(("ordereddict_bad_pairs", archive(b"\x80\x02ccollections\nOrderedDict\n]K\x01a\x85R.")))
    return out


# --------------------------------------------------------------------------------------- safetensors


class Pairs(list):
    """A JSON object as parsed by split_safetensors: its (key, value) pairs in order, duplicates kept."""


def split_safetensors(data):
    if len(data) < 8:
        return None
    n = struct.unpack_from("<Q", data)[0]
    if n > len(data) - 8:
        return None
    try:
        header = json.loads(data[8:8 + n].decode("utf-8"), object_pairs_hook=Pairs)
    except Exception:
        return None
    if not isinstance(header, Pairs):
        return None
    return header, data[8 + n:]


def join_safetensors(header_text, body, pad=True):
    if isinstance(header_text, str):
        header_text = header_text.encode("utf-8", "surrogatepass")
    if pad:
        header_text += b" " * ((8 - len(header_text) % 8) % 8)
    return struct.pack("<Q", len(header_text)) + header_text + body


def dump(pairs):
    def encode(v):
        if isinstance(v, Pairs):
            return "{" + ",".join(json.dumps(k) + ":" + encode(x) for k, x in v) + "}"
        if isinstance(v, dict):
            return "{" + ",".join(json.dumps(k) + ":" + encode(x) for k, x in v.items()) + "}"
        if isinstance(v, list):
            return "[" + ",".join(encode(x) for x in v) + "]"
        return json.dumps(v)
    return "{" + ",".join(json.dumps(k) + ":" + encode(v) for k, v in pairs) + "}"


def safetensors_mutations(data, rng, cap):
    out = []
    n = struct.unpack_from("<Q", data)[0] if len(data) >= 8 else 0
    for value in sorted({0, 1, 2, 7, n - 1, n + 1, len(data) - 8, len(data) - 7, len(data), 1 << 32,
                         100_000_001, (1 << 63), U64, U64 - 7, (1 << 63) + n} - {n}):
        if 0 <= value <= U64:
            out.append((f"header_len={value}", struct.pack("<Q", value) + data[8:]))
    parsed = split_safetensors(data)
    if parsed is None:
        return out
    header, body = parsed
    tensors = [(k, dict(v)) for k, v in header if k != "__metadata__" and isinstance(v, Pairs)]
    metadata = [(k, v) for k, v in header if k == "__metadata__"]

    def rebuilt(tag, entries, meta=None, body_=None, pad=True):
        pairs = (metadata if meta is None else meta) + [(k, Pairs(v.items())) for k, v in entries]
        out.append((tag, join_safetensors(dump(pairs), body if body_ is None else body_, pad)))

    ordered = sorted(tensors, key=lambda kv: kv[1].get("data_offsets", [0, 0])[0])
    for i, (name, entry) in enumerate(ordered[:6]):
        b, e = entry["data_offsets"]
        tag = f"t{i}"
        prev = ordered[i - 1][1]["data_offsets"] if i > 0 else None
        offsets = [[b, e + 1], [b + 1, e + 1], [e, b], [0, e - b], [b, U64], [U64, U64], [U64 - 1, U64],
                   [1 << 63, (1 << 63) + e - b], [b, e, e], [b], [], [-1, e], [b, 1.5], ["0", e],
                   [b, 1 << 64], [b + len(body), e + len(body)]]
        if prev is not None:
            offsets += [list(prev), [prev[0], prev[0] + e - b], [prev[1] - 1, prev[1] - 1 + e - b]]
        for k, off in enumerate(offsets):
            changed = [(nm, dict(en, data_offsets=off) if nm == name else en) for nm, en in tensors]
            rebuilt(f"{tag}_offsets{k}", changed)
        shapes = [[1 << 63], [U64], [1 << 32, 1 << 32], [1 << 62, 0], [0, 1 << 63], [0, U64], [-1], [1.5],
                  ["1"], [[1]], [1 << 64], [1] * 200, [2] * 70, [], [U64, U64, 0]]
        for k, shape in enumerate(shapes):
            changed = [(nm, dict(en, shape=shape) if nm == name else en) for nm, en in tensors]
            rebuilt(f"{tag}_shape{k}", changed)
        for k, dtype in enumerate(["F8_E4M3", "U16", "XX", 5, None, "", "f32", "F32\u0000"]):
            changed = [(nm, dict(en, dtype=dtype) if nm == name else en) for nm, en in tensors]
            rebuilt(f"{tag}_dtype{k}", changed)
        for field in ("dtype", "shape", "data_offsets"):
            changed = [(nm, {f: x for f, x in en.items() if f != field} if nm == name else en) for nm, en in tensors]
            rebuilt(f"{tag}_no_{field}", changed)
        changed = [(nm, dict(en, extra={"a": [1, {"b": None}], "c": 1.5}) if nm == name else en) for nm, en in tensors]
        rebuilt(f"{tag}_unknown_field", changed)
        # A duplicate name and a doubled field, which a JSON DOM would silently merge.
        text = dump(metadata + [(k, Pairs(v.items())) for k, v in tensors])
        key = json.dumps(name)
        out.append((f"{tag}_dup_name", join_safetensors(text[:-1] + "," + key + ":" + dump(list(entry.items())) + "}", body)))
        field = '"dtype":' + json.dumps(entry["dtype"])
        if field in text:
            out.append((f"{tag}_dup_field", join_safetensors(text.replace(field, field + "," + field, 1), body)))
    for i, name in enumerate(["", "__metadata__", "\udcff", "a" * 5000, "\u00e9\u4e2d", "\x00"]):
        if tensors:
            changed = [(name if k == 0 else nm, en) for k, (nm, en) in enumerate(tensors)]
            rebuilt(f"name{i}", changed)
    P = Pairs
    for i, meta in enumerate([[("__metadata__", None)], [("__metadata__", P([("k", 1)]))],
                              [("__metadata__", P([("k", P([("x", "y")]))]))], [("__metadata__", "text")],
                              [("__metadata__", P([("k", "v")])), ("__metadata__", P([("k", "v")]))],
                              [("__metadata__", P([("k", "v"), ("k", "w")]))], [("__metadata__", P())],
                              [("__metadata__", [1, 2])]]):
        rebuilt(f"meta{i}", tensors, meta=meta)
    base = dump(metadata + [(k, Pairs(v.items())) for k, v in tensors])
    deep = "[" * 200 + "]" * 200
    raw = [("deep_unknown", base[:-1] + (',' if tensors or metadata else '') + '"x":' + deep + "}"),
           ("deep_in_entry", base.replace('"dtype"', '"zz":' + deep + ',"dtype"', 1)),
           ("nul", base[:-1] + "\u0000}"), ("trailing", base + "x"), ("not_object", "[" + base + "]"),
           ("bom", "\ufeff" + base), ("leading_space", " " + base), ("string", '"abc"'), ("number", "12"),
           ("unterminated", base[:-1]), ("bad_utf8_marker", base.replace("{", '{"\udcff":1,', 1)),
           ("comma", base[:-1] + ",}"), ("numbers_big", base.replace('"shape":[', '"shape":[1e400,', 1))]
    for tag, text in raw:
        out.append((tag, join_safetensors(text, body)))
        out.append((tag + "_nopad", join_safetensors(text, body, pad=False)))
    rebuilt("body_short", tensors, body_=body[:-1])
    rebuilt("body_long", tensors, body_=body + b"\0" * 8)
    rebuilt("unpadded", tensors, pad=False)
    rng.shuffle(out)
    return out[:cap]


# ----------------------------------------------------------------------------------------------- main


def truncations(data, small, points, boundaries):
    """Every length of a file up to `small` bytes; else about `points` lengths on a stride, plus the
    lengths just around each structural boundary (header ends, record starts, end records)."""
    if len(data) <= small:
        return list(range(len(data)))
    stride = max(1, len(data) // points)
    lengths = set(range(0, len(data), stride)) | {len(data) - k for k in (1, 2, 8, 22, 23)} | set(range(0, 10))
    for b in boundaries:
        lengths |= {b - 1, b, b + 1}
    return sorted(l for l in lengths if 0 <= l < len(data))


def boundaries(data, fmt):
    if fmt == "safetensors":
        return [8, 8 + struct.unpack_from("<Q", data)[0]] if len(data) >= 8 else []
    try:
        z = Zip(data)
    except Exception:
        return []
    points = [z.cd_offset, z.eocd] + [x for x in (z.zip64_record, z.locator) if x is not None]
    for _, _, local, start, size, _ in z.entries:
        points += [local + 30, start, start + size]
    return points


def flips(data, rng, count, hot):
    """Offsets biased towards the `hot` ranges (headers), the rest uniform."""
    out = []
    for _ in range(count):
        if hot and rng.random() < 0.7:
            lo, hi = rng.choice(hot)
            at = rng.randrange(lo, max(lo + 1, min(hi, len(data))))
        else:
            at = rng.randrange(len(data))
        bit = rng.randrange(8)
        flipped = bytearray(data)
        flipped[at] ^= 1 << bit
        out.append((f"flip{at}.{bit}", bytes(flipped)))
    return out


def hot_ranges(data, fmt):
    if fmt == "safetensors":
        n = struct.unpack_from("<Q", data)[0] if len(data) >= 8 else 0
        return [(0, min(len(data), 8 + n))]
    try:
        z = Zip(data)
    except Exception:
        return []
    ranges = [(z.cd_offset, len(data))]
    for _, _, local, start, size, _ in z.entries:
        ranges.append((local, start))
    pkl = z.entry(b"data.pkl")
    if pkl is not None:
        ranges.append((pkl[3], pkl[3] + pkl[4]))
    return ranges


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("corpus")
    parser.add_argument("out")
    parser.add_argument("--format", choices=["torch_file", "safetensors"])
    parser.add_argument("--flips", type=int, default=24, help="bit flips per seed")
    parser.add_argument("--fields", type=int, default=32, help="field mutations per seed and kind")
    parser.add_argument("--seed", type=int, default=20240604)
    args = parser.parse_args()
    fmt = args.format or os.path.basename(os.path.normpath(args.corpus))
    if fmt not in ("torch_file", "safetensors"):
        sys.exit(f"mutate.py: cannot tell the format of {args.corpus}; pass --format")
    if os.path.isdir(args.out):
        shutil.rmtree(args.out)
    os.makedirs(args.out)
    written = 0

    def emit(seed_name, tag, content):
        nonlocal written
        if content is None:
            return
        safe = "".join(c if c.isalnum() or c in "._=-" else "_" for c in tag)[:80]
        with open(os.path.join(args.out, f"{seed_name}.{written:05d}.{safe}"), "wb") as f:
            f.write(content)
        written += 1

    for seed_name in sorted(os.listdir(args.corpus)):
        path = os.path.join(args.corpus, seed_name)
        if not os.path.isfile(path):
            continue
        with open(path, "rb") as f:
            data = f.read()
        rng = random.Random(args.seed ^ zlib.crc32(seed_name.encode()))
        small = 200 if fmt == "safetensors" else 64
        for length in truncations(data, small, 32 if fmt == "safetensors" else 24, boundaries(data, fmt)):
            emit(seed_name, f"trunc{length}", data[:length])
        if data:
            for tag, content in flips(data, rng, args.flips, hot_ranges(data, fmt)):
                emit(seed_name, tag, content)
        if fmt == "safetensors":
            for tag, content in safetensors_mutations(data, rng, args.fields * 3):
                emit(seed_name, tag, content)
            continue
        for tag, content in zip_field_mutations(data, rng, args.fields):
            emit(seed_name, tag, content)
        if not seed_name.startswith("bad_"):  # whole-archive rewrites of the valid seeds only
            for tag, content in zip_rebuild_mutations(data):
                emit(seed_name, tag, content)
        try:
            z = Zip(data)
            pkl = z.entry(b"data.pkl")
        except Exception:
            pkl = None
        if pkl is not None:
            payload = data[pkl[3]:pkl[3] + pkl[4]]
            for tag, new_payload in pickle_mutations(payload, rng, args.fields):
                emit(seed_name, "pkl_" + tag, with_pickle(data, new_payload))
    if fmt == "torch_file":
        for tag, content in synthetic_torch_files():
            emit("synthetic", tag, content)
    print(f"mutate.py: {written} {fmt} variants in {args.out}")


if __name__ == "__main__":
    main()
