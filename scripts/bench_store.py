"""The store benchmark (``scripts/bench store``): write and read pipelines against ceilings
computed from their primitives in the same run, and how many chunks a one-byte insert
changes. Prints ``name value unit`` lines.

The corpus is deterministic: alternating 1 MiB blocks of pseudo-random bytes and of
pseudo-text (words from a fixed vocabulary), from a fixed seed.
"""

from __future__ import annotations

import argparse
import io
import random
import time
from collections.abc import Callable

import blake3
import pyfastcdc
import zstandard

from store.chunking import (
    CHUNK_AVG_BYTES,
    CHUNK_MAX_BYTES,
    CHUNK_MIN_BYTES,
    NORMALIZED_CHUNKING,
    ChunkStream,
    chunk_bytes,
)
from store.frames import HEADER_BYTES, ZSTD_LEVEL, Codec, decode_frame, encode_frame, frame_codec
from store.ids import ChunkId

MIB = 1024 * 1024
SEED = 20261128


def make_corpus(size_bytes: int, seed: int = SEED) -> bytes:
    rng = random.Random(seed)
    vocabulary = [
        bytes(rng.choice(b"abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 11)))
        for _ in range(5000)
    ]
    blocks = []
    for index in range(size_bytes // MIB):
        if index % 2:
            blocks.append(rng.randbytes(MIB))
        else:
            text = b" ".join(rng.choices(vocabulary, k=MIB // 5))
            blocks.append((text + b"\n" * MIB)[:MIB])
    return b"".join(blocks)


def best_seconds(runs: list[Callable[[], object]], repeats: int) -> list[float]:
    """The best time of each run over ``repeats`` rounds, taken in turn so that a noisy
    moment on a shared machine hits the pipeline and its primitives alike."""
    best = [float("inf")] * len(runs)
    for _ in range(repeats):
        for index, run in enumerate(runs):
            start = time.perf_counter()
            run()
            best[index] = min(best[index], time.perf_counter() - start)
    return best


def emit(name: str, value: float, unit: str) -> None:
    print(f"{name} {value:.3f} {unit}", flush=True)


def bench_pipelines(corpus: bytes, repeats: int) -> None:
    mb = len(corpus) / 1e6
    pieces = [bytes(piece.data) for piece in ChunkStream(io.BytesIO(corpus))]
    ids = [ChunkId(blake3.blake3(piece).digest()) for piece in pieces]
    frames: list[bytes] = []

    def write_pipeline() -> None:
        frames.clear()
        stream = ChunkStream(io.BytesIO(corpus))
        frames.extend(encode_frame(piece.data) for piece in stream)
        assert stream.size == len(corpus)

    chunker = pyfastcdc.FastCDC(
        avg_size=CHUNK_AVG_BYTES,
        min_size=CHUNK_MIN_BYTES,
        max_size=CHUNK_MAX_BYTES,
        normalized_chunking=NORMALIZED_CHUNKING,
    )
    compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    decompressor = zstandard.ZstdDecompressor()

    def chunking_only() -> None:
        for _ in chunker.cut_stream(io.BytesIO(corpus)):
            pass

    def blake3_only() -> None:
        for piece in pieces:
            blake3.blake3(piece).digest()

    def zstd_only() -> None:
        for piece in pieces:
            compressor.compress(piece)

    def read_pipeline() -> None:
        for frame, chunk_id in zip(frames, ids, strict=True):
            decode_frame(frame, chunk_id)

    write_pipeline()  # fills ``frames`` before anything reads them
    write_s, chunk_s, hash_s, zstd_s = best_seconds(
        [write_pipeline, chunking_only, blake3_only, zstd_only], repeats
    )
    write_ceiling_s = chunk_s + hash_s + zstd_s  # 1 / Σ 1/rate, in seconds for the corpus
    emit("store.chunking", mb / chunk_s, "MB/s")
    emit("store.blake3", mb / hash_s, "MB/s")
    emit("store.zstd_compress", mb / zstd_s, "MB/s")
    emit("store.write_pipeline", mb / write_s, "MB/s")
    emit("store.write_ceiling", mb / write_ceiling_s, "MB/s")
    emit("store.write_ratio", write_ceiling_s / write_s, "ratio")

    payloads = [(frame_codec(frame), memoryview(frame)[HEADER_BYTES:]) for frame in frames]

    def decompress_only() -> None:
        for codec, payload in payloads:
            if codec is Codec.ZSTD:
                decompressor.decompress(payload)
            else:
                bytes(payload)

    read_s, unzstd_s = best_seconds([read_pipeline, decompress_only], repeats)
    read_ceiling_s = unzstd_s + hash_s
    emit("store.zstd_decompress", mb / unzstd_s, "MB/s")
    emit("store.read_pipeline", mb / read_s, "MB/s")
    emit("store.read_ceiling", mb / read_ceiling_s, "MB/s")
    emit("store.read_ratio", read_ceiling_s / read_s, "ratio")
    stored = sum(len(frame) for frame in frames)
    emit("store.stored_fraction", stored / len(corpus), "ratio")


def bench_insert(size_bytes: int) -> None:
    original = make_corpus(size_bytes, seed=SEED + 1)
    before = {ref.chunk_id for ref in chunk_bytes(original).chunks}
    for where, offset in (("front", 0), ("middle", size_bytes // 2)):
        edited = original[:offset] + b"!" + original[offset:]
        after = chunk_bytes(edited).chunks
        changed = sum(1 for ref in after if ref.chunk_id not in before)
        emit(f"store.insert_1_byte_{where}_chunks_changed", changed, "chunks")
    emit("store.chunks_in_file", len(before), "chunks")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a 32 MiB corpus, 2 rounds")
    args = parser.parse_args()
    corpus_mib, insert_mib, repeats = (32, 100, 2) if args.quick else (256, 100, 3)
    emit("store.corpus", corpus_mib, "MiB")
    bench_pipelines(make_corpus(corpus_mib * MIB), repeats)
    bench_insert(insert_mib * MIB)


if __name__ == "__main__":
    main()
