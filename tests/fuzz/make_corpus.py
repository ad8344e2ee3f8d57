#!/usr/bin/env python3
"""Writes the seed corpora of tests/fuzz/corpus/<harness>/ (checked in; rerun after changing an
input format). Each seed is a small, valid-looking input in the layout the harness's header
comment describes, so the fuzzers start from the interesting paths instead of random bytes."""

import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SOL_SOCKET, SCM_RIGHTS = 1, 1
SCM_DEVMEM_LINEAR, SCM_DEVMEM_DMABUF = 78, 79


def cmsg(level, ctype, payload, length=None):
    """One cmsg as x86_64 Linux lays it out: size_t len, int level, int type, data, padding."""
    length = 16 + len(payload) if length is None else length
    raw = struct.pack("<QiI", length, level, ctype) + payload
    return raw + b"\0" * (-len(raw) % 8)


def dmabuf(offset, size, token, dmabuf_id, kind=SCM_DEVMEM_DMABUF, length=None):
    return cmsg(SOL_SOCKET, kind, struct.pack("<QIIII", offset, size, token, dmabuf_id, 0), length)


def write(harness, seeds):
    folder = os.path.join(HERE, "corpus", harness)
    os.makedirs(folder, exist_ok=True)
    for old in os.listdir(folder):
        os.remove(os.path.join(folder, old))
    for name, data in seeds.items():
        with open(os.path.join(folder, name), "wb") as f:
            f.write(data)


def frag_parser():
    def case(control, received, flags=0, dmabuf_id=7, region=1 << 20, host=256 << 10):
        return struct.pack("<BIQQq", flags, dmabuf_id, region, host, received) + control

    return {
        "one_frag": case(dmabuf(4096, 4096, 1, 7), 4096),
        "linear_then_frags": case(
            dmabuf(0, 100, 0, 0, SCM_DEVMEM_LINEAR) + dmabuf(8192, 4096, 2, 7) +
            dmabuf(2048, 2048, 3, 7), 100 + 4096 + 2048),
        "plain_data": case(b"", 1500),
        "ctrunc": case(dmabuf(0, 4096, 1, 7), 4096, flags=1),
        "short_cmsg": case(dmabuf(0, 4096, 1, 7, length=20), 4096),
        "cmsg_len_past_end": case(dmabuf(0, 4096, 1, 7, length=200), 4096),
        "foreign_dmabuf": case(dmabuf(0, 4096, 1, 8), 4096),
        "frag_at_region_end": case(dmabuf((1 << 20) - 4096, 4096, 1, 7), 4096),
        "scm_rights": case(cmsg(SOL_SOCKET, SCM_RIGHTS, struct.pack("<ii", 3, 4)), 10),
        "count_mismatch": case(dmabuf(0, 4096, 1, 7), 4095),
    }


def devmem_rx():
    def frag(linear=False, fault=0, size=4095, in_page=0, page=0):
        return struct.pack("<BHHB", (1 if linear else 0) | fault << 5, size, in_page, page)

    def receive(*frags):
        return bytes([0, len(frags) - 1]) + b"".join(frags)

    def consume(fail_mask=0):
        return bytes([3, fail_mask])

    return {
        "pages_then_consume": receive(frag(page=0), frag(page=1), frag(page=5)) + consume(),
        "linear_and_split": receive(frag(linear=True, size=99), frag(size=2047, in_page=2048)) +
        receive(frag(size=4095)) + consume(),
        "release_fails_then_retries": receive(*[frag(page=i) for i in range(16)]) +
        consume(fail_mask=1) + receive(frag(page=20)) + consume(),
        "pool_dry": b"".join(receive(*[frag(page=i) for i in range(16)]) for _ in range(5)) +
        consume(),
        "fault_foreign_dmabuf": receive(frag(), frag(fault=1)),
        "fault_outside_region": receive(frag(fault=2)),
        "fault_count": receive(frag(fault=4)),
        "linear_overflow": receive(*[frag(linear=True, size=4095) for _ in range(5)]),
    }


def emulated_rx():
    def header(split, linear, seed):
        return struct.pack("<BBQ", split, linear, seed)

    def write_(n):
        return struct.pack("<BH", 0, n)

    def receive(max_bytes, oldest=False):
        return struct.pack("<BIB", 1, max_bytes - 1, 1 if oldest else 0)

    def release(count, first=0, flags=0):
        return struct.pack("<BBBB", 2, count, first, flags)

    return {
        "write_receive_release": header(10, 5, 1) + write_(20000) + receive(65536) +
        release(255),
        "split_and_linear": header(50, 50, 2) + write_(60000) + receive(16384) + receive(65536) +
        release(3, 1, 3) + receive(65536) + release(255),
        "pool_pressure": header(0, 0, 3) + b"".join(write_(65535) + receive(262144) for _ in
                                                    range(6)) + receive(4096, oldest=True) +
        release(255),
        "peer_closes": header(10, 10, 4) + write_(5000) + bytes([3]) + receive(262144) +
        receive(262144),
        "would_block": header(10, 10, 5) + receive(4096),
    }


def wire():
    hello = struct.pack("<IHBBHHIIQQ", 0x4D444C48, 1, 1, 0, 2, 4, 512 << 10, 1024,
                        0x1122334455667788, 9) + b"\0" * 4
    reply = struct.pack("<IIQ", 0x4D445052, 0, 0x1122334455667788)
    striped = struct.pack("<IiQ", 0x4D44534D, 7, 1 << 20)
    inline = struct.pack("<IiQ", 0x4D44494D, -1, 100)
    striped_over = struct.pack("<IiQQ", 0x4D444F4D, 7, 1 << 20, 0x5)  # sockets 0 and 2
    v4 = struct.pack("<HH", 2, 4242) + bytes([127, 0, 0, 1]) + b"\0" * 12
    v6 = struct.pack("<HH", 10, 4242) + b"\0" * 15 + b"\1"
    handle4 = struct.pack("<IHH", 0x4D44484E, 1, 0) + v4 + struct.pack("<Q", 99)
    handle6 = struct.pack("<IHH", 0x4D44484E, 1, 0) + v6 + struct.pack("<Q", 99)
    return {
        "hello": hello,
        "reply": reply,
        "header_striped": striped,
        "header_inline": inline,
        "header_striped_over": striped_over,
        # A virtual NIC's handle: byte 6 counts two more IPv4 members at [36, 44).
        "handle_ipv4_fused": (handle4[:6] + b"\2" + handle4[7:] + bytes([198, 18, 1, 1, 198, 18, 2, 1])
                              + b"\0" * (128 - len(handle4) - 8)),
        "handle_ipv4": handle4 + b"\0" * (128 - len(handle4)),
        "handle_ipv6": handle6 + b"\0" * (128 - len(handle6)),
        "address_ipv4": v4,
    }


def config():
    # Name bytes index the harness's variable list (plugin/core/config.cc order).
    names = ["NSOCKS", "NTHREADS", "CHUNK_SIZE", "INLINE_BYTES", "MAX_RECVS",
             "HANDSHAKE_TIMEOUT_MS", "TCP_USER_TIMEOUT_MS", "EMULATE", "RX_REGION_BYTES",
             "REQUIRE", "RX_QUEUES", "EMULATE_SPLIT_PERCENT", "EMULATE_LINEAR_PERCENT", "UNPACK",
             "SOCKET_IFNAME", "SOCKET_FAMILY", "BUFFSIZE", "P2P_NET_CHUNKSIZE"]

    def env(**values):
        lines = [bytes([names.index(k)]) + v.encode() for k, v in values.items()]
        return b"\0" + b"\n".join(lines)

    def integer(text, lo, hi, probe, size=False):
        return (b"\3" if size else b"\1") + struct.pack("<qqq", lo, hi, probe) + text.encode()

    return {
        "env_defaults": b"\0",
        "env_valid": env(NSOCKS="8", NTHREADS="2", CHUNK_SIZE="128K", INLINE_BYTES="0",
                         RX_REGION_BYTES="64M", RX_QUEUES="14,15", UNPACK="nccl",
                         SOCKET_IFNAME="^=eth1", SOCKET_FAMILY="AF_INET6", BUFFSIZE="0x400000"),
        "env_bad_threads": env(NSOCKS="2", NTHREADS="4"),
        "env_region_unaligned": env(RX_REGION_BYTES="1048577"),
        "env_other_name": b"\0\xffNCCL_DEBUG=INFO\n" + bytes([names.index("EMULATE")]) + b"1",
        "int_suffix": integer("512K", 4096, 64 << 20, 65536, size=True),
        "int_suffix_on_count": integer("4K", 0, 1 << 20, 4096),
        "int_hex": integer("0x1000", 0, 1 << 20, 7, size=True),
        "int_negative": integer("-5", -10, 10, -10),
        "int_extremes": integer("-9223372036854775808", -(1 << 63), (1 << 63) - 1, -(1 << 63)),
        "int_junk": integer(" +010x", 0, 100, 0),
        "queues": b"\2" + b"0,1,65535",
        "queues_duplicate": b"\2" + b"3,3",
        "queues_empty_item": b"\2" + b"1,,2",
    }


def recv_control():
    def header(kind, tag, size, sockets=None):
        if sockets is not None:  # kStripedOver: only the sockets of the set carry the message
            return struct.pack("<IiQQ", 0x4D444F4D, tag, size, sockets)
        return struct.pack("<IiQ", {"striped": 0x4D44534D, "inline": 0x4D44494D}[kind], tag, size)

    def case(flags, inline_limit, posts, control, data=(b"",)):
        out = struct.pack("<BHB", flags, inline_limit, len(posts) - 1)
        for buffers in posts:
            out += bytes([len(buffers) - 1])
            for tag, size in buffers:
                out += struct.pack("<BH", tag, size)
        out += struct.pack("<H", len(control)) + control
        for d in data:
            out += struct.pack("<H", len(d)) + d
        return out

    payload = bytes(range(256)) * 4
    return {
        "inline": case(0, 1024, [[(1, 1000)]], header("inline", 1, 1000) + payload[:1000]),
        "striped_one_socket": case(0, 0, [[(2, 4096)]], header("striped", 2, 4096),
                                   [payload * 4]),
        "striped_two_sockets": case(2, 0, [[(2, 8192)]], header("striped", 2, 8192),
                                    [payload * 4, payload * 4]),
        "grouped_by_tag": case(0, 64, [[(1, 16), (2, 16)], [(1, 8)]],
                               header("inline", 2, 16) + payload[:16] + header("inline", 1, 8) +
                               payload[:8] + header("inline", 1, 16) + payload[:16]),
        "truncated": case(0, 1024, [[(3, 10)]], header("inline", 3, 100) + payload[:100]),
        "inline_above_limit": case(0, 16, [[(3, 100)]], header("inline", 3, 100) + payload[:100]),
        "emulated_striped": case(1, 0, [[(4, 30000)]], header("striped", 4, 30000),
                                 [payload * 30]),
        "garbage_header": case(0, 1024, [[(1, 100)]], b"GET / HTTP/1.1\r\n"),
        "zero_bytes": case(0, 1024, [[(0, 0)]], header("inline", 0, 0)),
        "peer_gone_mid_message": case(0, 0, [[(5, 60000)]], header("striped", 5, 60000),
                                      [payload]),
        "striped_over_second_socket": case(2, 0, [[(6, 4096)]], header("striped", 6, 4096, 0x2),
                                           [b"", payload * 4]),
        "striped_over_missing_socket": case(0, 0, [[(6, 4096)]], header("striped", 6, 4096, 0x2),
                                            [payload * 4]),
    }


def main():
    write("frag_parser", frag_parser())
    write("devmem_rx", devmem_rx())
    write("emulated_rx", emulated_rx())
    write("wire", wire())
    write("config", config())
    write("recv_control", recv_control())
    return 0


if __name__ == "__main__":
    sys.exit(main())
