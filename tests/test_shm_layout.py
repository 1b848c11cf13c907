"""Shared-memory layouts are declared once; offsets, structs and docs derive from them.

``aigateway.shm_layout`` is the declaration form: a ``Layout`` of named ``Field``s laid
out by C's rules.  Each region of the node's segment (token buckets, stats, provider
health, live settings, labelled series, the segment's own header) declares its layout
with it; the pure twins take their indices from the declaration, the compiled twins'
C structs are checked against it, and the docstrings that draw a layout must draw the
declared one.
"""

from __future__ import annotations

import dataclasses
import importlib
import os
import sys
import textwrap
import types

import pytest

from aigateway import hotpath, runtime, shm
from aigateway.core import health
from aigateway.dashboard import history
from aigateway.hotpath import regions
from aigateway.keys import slots as key_slots
from aigateway.shm_layout import Field, Layout, fingerprint
from aigateway.stats import series

# --- the declaration form -----------------------------------------------------------------


def test_fields_sit_where_a_c_compiler_puts_them():
    layout = Layout(
        "sample",
        (Field("flag", "u8"), Field("count", "u32"), Field("small", "u16"), Field("x", "f64")),
    )
    assert layout.offsets() == {"flag": 0, "count": 4, "small": 8, "x": 16}
    assert layout.size == layout.struct.size == 24
    assert layout.index("x") == 2  # in the region cast to "d"
    assert layout.index("count") == 1  # in the region cast to "I"


def test_a_layout_pads_to_its_declared_size_and_refuses_one_too_small():
    padded = Layout("padded", (Field("a", "u32"), Field("b", "u64")), size=64)
    assert padded.size == padded.struct.size == 64
    assert padded.struct.unpack(bytes(64)) == (0, 0)  # the padding holds no values
    with pytest.raises(ValueError, match="take 16 bytes"):
        Layout("cramped", (Field("a", "u32"), Field("b", "u64")), size=8)


def test_records_nest_and_repeat_and_dotted_names_reach_inside():
    record = Layout("record", (Field("calls", "u64"), Field("seconds", "f64")))
    outer = Layout(
        "outer", (Field("state", "u32"), Field("window", record, 3), Field("tail", "u8"))
    )
    assert outer.offset_of("window") == 8
    assert outer.offset_of("window.seconds") == 16
    assert outer.index("window.seconds") == 2
    assert outer.size == 8 + 3 * 16 + 8  # the tail is padded to the record's alignment
    values = outer.struct.unpack(bytes(outer.size))
    assert len(values) == 1 + 3 * 2 + 1


def test_read_and_write_reach_one_named_field_of_a_layout_anywhere_in_a_buffer():
    layout = Layout("named", (Field("magic", "bytes", 4), Field("pid", "i64")))
    buffer = bytearray(64)
    layout.write(buffer, "magic", b"AGXX", at=16)
    layout.write(buffer, "pid", -5, at=16)
    assert layout.read(buffer, "magic", at=16) == b"AGXX"
    assert layout.read(buffer, "pid", at=16) == -5
    assert buffer[16:20] == b"AGXX"


def test_mistakes_in_a_declaration_are_refused():
    with pytest.raises(ValueError, match="unknown type"):
        Field("x", "float")
    with pytest.raises(ValueError, match="two fields named x"):
        Layout("twice", (Field("x", "u32"), Field("x", "u32")))
    layout = Layout("small", (Field("x", "u32"), Field("pair", "u32", 2)))
    with pytest.raises(KeyError, match="no field 'y'"):
        layout.offset_of("y")
    with pytest.raises(TypeError, match="not one value"):
        layout.read(bytearray(12), "pair")


def test_a_compiled_struct_that_drifts_from_its_declaration_is_an_error():
    layout = Layout("checked", (Field("a", "u32"), Field("b", "u64")))
    layout.check(16, {"a": 0, "b": 8})
    with pytest.raises(TypeError, match="differs from its declaration"):
        layout.check(16, {"a": 0, "b": 4})
    with pytest.raises(TypeError, match="differs from its declaration"):
        layout.check(24, {"a": 0, "b": 8})


def test_describe_draws_offsets_types_names_and_docs():
    layout = Layout("drawn", (Field("state", "u32", doc="0 closed"), Field("ids", "u64", 2)))
    assert layout.describe() == "0    u32     state  0 closed\n8    u64[2]  ids\n24   (end)"


# --- the regions of the node --------------------------------------------------------------

DRAWN = [
    (regions, regions.BUCKET),
    (regions, regions.STATS_HEADER),
    (regions, regions.SLOT_HEAD),
    (regions, regions.FLIGHTS_HEADER),
    (regions, regions.FLIGHT_SLOT),
    (health, health.ENTRY),
    (runtime, runtime.HEAD),
    (runtime, runtime.SLOT),
    (series, series.HEAD),
    (series, series.ENTRY),
    (shm, shm.HEADER),
    (history, history.HEAD),
    (key_slots, key_slots.HEAD),
    (key_slots, key_slots.SLOT),
]


@pytest.mark.parametrize(
    ("module", "layout"), DRAWN, ids=[f"{m.__name__}:{lay.name}" for m, lay in DRAWN]
)
def test_every_docstring_that_draws_a_region_draws_its_declared_layout(module, layout):
    drawn = textwrap.indent(layout.describe(), "    ")
    assert drawn in (module.__doc__ or ""), f"paste into {module.__name__}'s docstring:\n{drawn}"


def test_the_known_offsets_of_the_regions_have_not_moved():
    # What other processes of the same node expect: a change here is a new format.
    assert regions.BUCKET.size == 64
    assert regions.BUCKET.offset_of("tat_ns") == 24
    assert regions.STATS_HEADER.size == 64
    assert regions.SLOT_HEAD.size == 16
    assert health.ENTRY.size == 256
    assert health.ENTRY.offset_of("window") == 64
    assert series.ENTRY.size == 128
    assert shm.HEADER.struct.format == "=8sIIqQ"


@pytest.mark.skipif(hotpath.NO_EXTENSIONS, reason="the compiled twins are not used")
@pytest.mark.parametrize(
    ("module", "layout"),
    [
        ("_bucket_c", regions.BUCKET),
        ("_stats_c", regions.STATS_HEADER),
        ("_stats_c", regions.SLOT_HEAD),
        ("_flights_c", regions.FLIGHTS_HEADER),
        ("_flights_c", regions.FLIGHT_SLOT),
        ("_window_c", regions.WINDOW_BUCKET),
    ],
)
def test_the_compiled_twins_c_structs_are_the_declared_layouts(module, layout):
    compiled = importlib.import_module(f"aigateway.hotpath.{module}")
    size, offsets = compiled.C_LAYOUTS[layout.name]
    assert (size, offsets) == (layout.size, layout.offsets())


def test_a_token_bucket_writes_its_values_where_the_layout_declares_them(
    hotpath_impl: types.ModuleType,
):
    buffer = bytearray(regions.BUCKET.size)
    hotpath_impl.TokenBucket(5.0, 10.0, buffer).close()
    values = dict(zip(regions.BUCKET.offsets(), regions.BUCKET.struct.unpack(buffer), strict=False))
    assert values["magic"] == regions.BUCKET_MAGIC
    assert values["version"] == regions.REGION_VERSION
    assert (values["rate_per_s"], values["burst"]) == (5.0, 10.0)
    assert values["creator_pid"] == os.getpid()


def test_shared_stats_write_their_header_and_slots_where_the_layout_declares_them(
    hotpath_impl: types.ModuleType,
):
    schema = hotpath.StatsSchema(counters=("a", "b"), gauges=("g",))
    buffer = bytearray(schema.buffer_size(3))
    hotpath_impl.SharedStats.initialise(buffer, schema, 3)
    header = regions.STATS_HEADER
    assert header.read(buffer, "magic") == regions.STATS_MAGIC
    assert header.read(buffer, "fingerprint") == schema.fingerprint
    assert (header.read(buffer, "slots"), header.read(buffer, "counters")) == (3, 2)
    stats = hotpath_impl.SharedStats(schema, buffer)
    stats.incr(schema.counter("b"), 7)
    slot = header.size + stats.slot * schema.slot_size
    assert regions.SLOT_HEAD.read(buffer, "owner_pid", slot) == os.getpid()
    counter_b = slot + regions.SLOT_HEAD.size + 8
    assert int.from_bytes(buffer[counter_b : counter_b + 8], sys.byteorder) == 7
    stats.close()


def test_a_flight_table_writes_its_claims_where_the_layout_declares_them(
    hotpath_impl: types.ModuleType,
):
    buffer = bytearray(hotpath_impl.FlightTable.size(64))
    flights = hotpath_impl.FlightTable(buffer, 64)
    key = (5).to_bytes(16, "little")  # home slot 5
    flights.claim(key, os.getpid(), 1_800_000_000.25, 0.0)
    header, slot = regions.FLIGHTS_HEADER, regions.FLIGHT_SLOT
    assert header.read(buffer, "magic") == regions.FLIGHTS_MAGIC
    assert (header.read(buffer, "slots"), header.read(buffer, "window")) == (64, 32)
    at = header.size + 5 * slot.size
    assert slot.read(buffer, "key", at) == key
    assert slot.read(buffer, "owner", at) == 1_800_000_000_250 << 22 | os.getpid()
    flights.close()


def test_the_health_board_keeps_each_circuit_where_the_layout_declares_it():
    region = bytearray(health.HealthBoard.size(2))
    board = health.HealthBoard(region, ["first", "second"], health.HealthPolicy(2))
    for _ in range(2):
        board.record("second", "server_error", 0.5)
    second = health.ENTRY.size  # the second entry
    circuit = health.CIRCUIT
    assert circuit.read(region, "state", second) == health.OPEN
    assert circuit.read(region, "opened", second) == 1
    assert circuit.read(region, "state", 0) == health.CLOSED
    window = second + health.ENTRY.offset_of("window")
    bucket = health.WINDOW_BUCKET
    calls = sum(bucket.read(region, "calls", window + i * bucket.size) for i in range(6))
    assert calls == 2
    # The record the board reads is the declared one, field for field.
    entry_fields = [f.name for f in dataclasses.fields(health._Entry)]
    assert entry_fields == [f.name for f in circuit.fields]
    board.close()


def test_a_region_laid_out_for_other_declarations_is_refused():
    ours = Layout("table", (Field("used", "u32"), Field("cells", "u32")))
    theirs = Layout("table", (Field("used", "u64"), Field("cells", "u32")))  # another build
    spec = shm.RegionSpec("table", 64, {"rows": 2}, (ours,))
    segment = shm.create_segment(
        shm.NodeLayout(regions=(spec,)), f"{shm.segment_name()}.test-layout-fingerprint"
    )
    try:
        assert len(segment.region("table", ours)) == 64
        with pytest.raises(ValueError, match="laid out for other declarations"):
            segment.region("table", theirs)
        assert len(segment.region("table")) == 64  # asked for no check
    finally:
        segment.close()
        segment.unlink()


def test_a_fingerprint_ignores_docs_and_sees_every_type_count_and_offset():
    plain = Layout("x", (Field("a", "u32"), Field("b", "u64")))
    documented = Layout("x", (Field("a", "u32", doc="a count"), Field("b", "u64")))
    assert fingerprint(plain) == fingerprint(documented)
    assert fingerprint(plain) != fingerprint(Layout("x", (Field("a", "u64"), Field("b", "u64"))))
    assert fingerprint(plain) != fingerprint(Layout("x", (Field("a", "u32", 2), Field("b", "u64"))))
    assert fingerprint(plain) != fingerprint(Layout("x", (Field("a", "u32"),), size=16))
