"""Differential: for random valid request messages of every method, the namespace(s), namespace
id and task queue(s) the body scanner extracts equal those read from the message fully decoded
by ``temporalio``'s classes (``fuzz.reference``), alone and with a second message appended
(protobuf merges them: last scalar wins, messages merge, repeated fields append)."""

from __future__ import annotations

import os
from collections import Counter

import pytest
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from extauthz import methods, wire
from fuzz import messages, reference

EXAMPLES = int(os.environ.get("EXTAUTHZ_FUZZ_EXAMPLES", "25"))
ENTRIES = sorted((e for e in methods.table().values() if e.request_type),
                 key=lambda e: e.method.path)
SEEN: Counter[str] = Counter()


def _scan(entry: methods.MethodEntry, body: bytes) -> reference.Found:
    found = wire.scan(memoryview(body), entry.plan) if entry.plan else wire.Extracted()
    return reference.scanned(found)


def test_every_method_with_a_request_message_is_covered() -> None:
    """The differential runs over every WorkflowService and OperatorService method."""
    services = Counter(e.method.service for e in ENTRIES)
    assert services[methods.WORKFLOW_SERVICE] >= 90
    assert services[methods.OPERATOR_SERVICE] >= 10


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.method.short)
def test_scanner_agrees_with_full_decoding(entry: methods.MethodEntry) -> None:
    """Scanned namespace/id/other namespaces/task queues == fully decoded ones."""

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(a=messages.requests(entry.request_type),
           b=st.none() | messages.requests(entry.request_type))
    def check(a: Message, b: Message | None) -> None:
        body = a.SerializeToString() + (b.SerializeToString() if b is not None else b"")
        parsed = reference.message_class(entry.request_type).FromString(body)
        expected = reference.extract(parsed)
        assert _scan(entry, body) == expected
        SEEN["messages"] += 1
        SEEN["namespaces"] += bool(expected.namespace)
        SEEN["other_namespaces"] += sum(expected.other_namespaces.values())
        SEEN["task_queues"] += sum(expected.task_queues.values())

    check()


def test_the_generator_reaches_what_the_authorizer_reads() -> None:
    """The random messages do carry namespaces, cross-namespace targets and task queues (the
    differential above is not vacuous). Runs after it in file order; alone it draws its own."""
    if SEEN["messages"] == 0:  # run on its own: sample a few methods
        for name in ("RespondWorkflowTaskCompleted", "ExecuteMultiOperation",
                     "StartWorkflowExecution"):
            entry = methods.by_name(f"WorkflowService/{name}")
            assert entry is not None
            test_scanner_agrees_with_full_decoding(entry)
    assert SEEN["namespaces"] > 0
    assert SEEN["other_namespaces"] > 0
    assert SEEN["task_queues"] > 0


def test_oracle_catches_a_first_one_wins_scanner() -> None:
    """The oracle is sharp: a namespace sent twice differs from what a first-one-wins reader
    would report."""
    entry = methods.by_name("WorkflowService/DescribeNamespace")
    assert entry is not None
    cls = reference.message_class(entry.request_type)
    body = cls(namespace="payroll").SerializeToString() + cls(namespace="other").SerializeToString()
    assert reference.extract(cls.FromString(body)).namespace == "other"
    assert _scan(entry, body).namespace == "other"
