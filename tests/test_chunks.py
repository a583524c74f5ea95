"""Chunk files of the run's scratch (changedetect.engine.chunks)."""

from __future__ import annotations

import ast
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from changedetect.engine.chunks import KeptChunk, load_chunk, map_chunk, save_chunk


def test_a_saved_chunk_loads_whole_by_layers_and_mapped(tmp_path):
    block = np.random.default_rng(0).random((5, 7, 9), dtype=np.float32)
    block[1, 2, 3] = np.nan
    path = tmp_path / "c.npy"
    save_chunk(path, block)
    np.testing.assert_array_equal(load_chunk(KeptChunk(path)), block)
    layers = load_chunk(KeptChunk(path, (4, 0, 2)))
    np.testing.assert_array_equal(layers, block[[4, 0, 2]])
    assert layers.flags.c_contiguous
    np.testing.assert_array_equal(map_chunk(path)[1:3, 2], block[1:3, 2])
    assert not list(tmp_path.glob("*.part"))  # nothing left under a passing name


def test_a_missing_chunk_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_chunk(KeptChunk(tmp_path / "gone.npy"))
    with pytest.raises(FileNotFoundError):
        map_chunk(tmp_path / "gone.npy")


def test_no_two_threads_parse_a_chunk_header_at_once(tmp_path, monkeypatch):
    # numpy parses .npy headers with ast.literal_eval, whose state CPython 3.11 shares between
    # threads (python/cpython#106905): the pass's threads load chunks side by side
    paths = []
    for k in range(8):
        paths.append(tmp_path / f"{k}.npy")
        save_chunk(paths[-1], np.full((2, 4, 4), k, np.float32))
    inside, most = 0, 0
    count = threading.Lock()
    literal_eval = ast.literal_eval

    def parse(text):  # type: ignore[no-untyped-def]
        nonlocal inside, most
        with count:
            inside += 1
            most = max(most, inside)
        time.sleep(0.005)  # long enough for another thread to come in
        try:
            return literal_eval(text)
        finally:
            with count:
                inside -= 1

    monkeypatch.setattr(ast, "literal_eval", parse)
    with ThreadPoolExecutor(4) as pool:
        whole = list(pool.map(lambda p: load_chunk(KeptChunk(p)), paths))
        layers = list(pool.map(lambda p: load_chunk(KeptChunk(p, (1,))), paths))
        mapped = list(pool.map(lambda p: np.array(map_chunk(p)), paths))
    assert most == 1
    for k in range(8):
        assert (whole[k] == k).all() and (layers[k] == k).all() and (mapped[k] == k).all()
        assert layers[k].shape == (1, 4, 4)
