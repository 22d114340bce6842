"""The prediction engine's per-event step: score, learn, predict, plan, route. Pure logic.

The Faust agents are thin loops around :class:`Engine`: they decode the record, fetch the
client's :class:`ClientRecord` from the table, call :meth:`Engine.on_interaction` or
:meth:`Engine.on_feedback`, store the new record and send what the step produced. Nothing here
touches Kafka, the clock or randomness, so the evaluator, the tests and the worker all drive
the same code and get the same predictions.

Every record carries the (partition, offset) it was last applied at: Kafka delivers at least
once, and a replayed event is recognised and changes nothing.

One client cannot poison the shared model (issue 12), however its events arrive (collector,
a direct Kafka producer, many sockets): the guard judges each event before the predictor
learns it, a flagged client's clicks no longer reach the shared signals, and the client's
contribution budget travels in ``session`` (:class:`streams.predictor.ClientState`), so it
survives a restart through the table's changelog.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import msgspec

from foresight.ring import EmptyRingError, HashRing
from foresight.settings import Settings
from schemas import Feedback, Interaction, PrefetchCommand, SecurityAlert
from streams.guard import AbuseGuard
from streams.guard import ClientState as GuardState
from streams.planner import Connection, PlannerConfig, PlannerState, apply_feedback, plan
from streams.predictor import ClientState, Foresight

MODEL_NAME = "foresight-v1"
#: How far ahead of its arrival in Kafka an event's own timestamp may be: clocks differ by
#: seconds, not more (the agents' tokens allow the same 60 s of skew).
FUTURE_SKEW_S = 60.0


#: Event ids a client record remembers to drop copies by (an agent resends a view whose ack
#: it did not get, seconds later, so a few suffice).
RECENT_EVENT_IDS = 16


class ClientRecord(msgspec.Struct, kw_only=True):
    """Everything the worker keeps for one client, stored as msgpack bytes in a Faust table."""

    session: ClientState = msgspec.field(default_factory=ClientState)
    last_prediction: list[str] = msgspec.field(default_factory=list)
    tokens: float | None = None
    counted_at: float | None = None
    threshold_offset: float = 0.0
    # content_id -> expires_at of prefetches already commanded: the node holds them
    prefetched: dict[str, float] = msgspec.field(default_factory=dict)
    guard: GuardState = msgspec.field(default_factory=GuardState)
    partition: int = -1
    offset: int = -1
    events: int = 0
    hits: int = 0
    # The last RECENT_EVENT_IDS event ids: an agent sends a view again when its ack never
    # came, and the copy carries the same id.
    recent_events: list[str] = msgspec.field(default_factory=list)

    def planner_state(self) -> PlannerState:
        return PlannerState(self.tokens, self.counted_at, self.threshold_offset)


_encode_record = msgspec.msgpack.Encoder().encode
_decode_record = msgspec.msgpack.Decoder(ClientRecord).decode


def dumps_record(record: ClientRecord) -> bytes:
    return _encode_record(record)


def loads_record(data: bytes) -> ClientRecord:
    return _decode_record(data)


@dataclass(frozen=True)
class EngineConfig:
    """``top_k`` predictions are scored (the online HR@k) and kept in the record; the planner
    considers ``prefetch_k``, so prefetching can reach further without moving the metric."""

    top_k: int = 5
    prefetch_k: int = 10
    command_ttl_s: float = 600.0
    model_name: str = MODEL_NAME
    planner: PlannerConfig = field(default_factory=PlannerConfig)


@dataclass
class Step:
    """What one interaction produced."""

    record: ClientRecord
    predictions: list[tuple[str, float]]  # max(top_k, prefetch_k) of them, most likely first
    commands: list[tuple[int, PrefetchCommand]]  # (prefetch-commands partition, command)
    alert: SecurityAlert | None = None
    scored: bool = False  # the event was scored against the previous prediction
    hit: bool = False
    duplicate: bool = False  # already applied: nothing changed
    unrouted: int = 0  # commands dropped because the ring has no live node
    blocked: bool = False  # the abuse guard stopped this client's prefetches
    threshold: float = 0.0


def command_id(client_id: str, content_id: str, event_id: str) -> str:
    """Deterministic, so a replayed event produces the same id and nodes can deduplicate."""
    digest = hashlib.sha256(f"{client_id}\x1f{content_id}\x1f{event_id}".encode()).hexdigest()
    return digest[:32]


class Engine:
    """Drives the predictor, the planner, the guard and the ring for one event at a time."""

    def __init__(
        self,
        predictor: Foresight,
        config: EngineConfig | None = None,
        guard: AbuseGuard | None = None,
    ) -> None:
        self.predictor = predictor
        self.config = config or EngineConfig()
        self.guard = guard

    def predictions_for(
        self, client_id: str, record: ClientRecord | None
    ) -> list[tuple[str, float]]:
        """The client's current top k, without changing anything (for inspection)."""
        self.predictor.set_client_state(client_id, (record or ClientRecord()).session)
        try:
            return self.predictor.predict(client_id, self.config.top_k)
        finally:
            self.predictor.forget(client_id)

    def on_interaction(
        self,
        event: Interaction,
        record: ClientRecord | None,
        ring: HashRing,
        partition: int,
        offset: int,
        received_at: float | None = None,
        *,
        predict: bool = True,
    ) -> Step:
        """One interaction. ``received_at`` is when Kafka got it (the record's timestamp): an
        event stamped more than FUTURE_SKEW_S after that is taken as of ``received_at``, since
        a client's clock must not steer the shared model (one view stamped a month ahead
        would make every other item's popularity negligible).

        ``predict=False`` learns the event and plans nothing (a worker far behind sheds the
        prediction of a click whose prefetches could no longer arrive in time: half the step's
        cost, so it catches up sooner); the next event is then not scored."""
        record = record or ClientRecord()
        if record.partition == partition and offset <= record.offset:
            return Step(record, [], [], duplicate=True)
        if event.event_id in record.recent_events:
            return Step(record, [], [], duplicate=True)
        if received_at is not None and event.ts > received_at + FUTURE_SKEW_S:
            event = msgspec.structs.replace(event, ts=received_at)
        client = event.client_id
        # Score first: was this click among the last predictions?
        scored = bool(record.last_prediction)
        hit = scored and event.content_id in record.last_prediction[: self.config.top_k]
        # The guard's verdict next: a flagged client teaches the shared model nothing more.
        guard_state, blocked, alert = record.guard, False, None
        if self.guard is not None:
            guard_state, verdict = self.guard.step(record.guard, client, event.content_id, event.ts)
            blocked = verdict.flagged
            if verdict.newly_flagged:
                alert = self.guard.alert(verdict)
        # Then learn (the client's own session advances even when blocked), then predict.
        self.predictor.set_client_state(client, record.session)
        self.predictor.learn(client, event.content_id, event.ts, contribute=not blocked)
        predictions = (
            self.predictor.predict(client, max(self.config.top_k, self.config.prefetch_k))
            if predict
            else []
        )
        session = self.predictor.client_state(client) or ClientState()
        self.predictor.forget(client)  # the table holds client state, not the predictor
        ctx = event.context
        connection: Connection | None = ctx.connection if ctx is not None else None
        prefetched = {c: t for c, t in record.prefetched.items() if t > event.ts}
        planned = plan(
            predictions[: self.config.prefetch_k],
            record.planner_state(),
            now=event.ts,
            connection=connection,
            save_data=bool(ctx and ctx.save_data) or blocked,
            held={c: "commanded" for c in prefetched},
            config=self.config.planner,
        )
        commands: list[tuple[int, PrefetchCommand]] = []
        unrouted, slot, decisions = 0, 0, planned.decisions
        if decisions:  # all of an event's commands go to its client's owner: one look-up
            try:
                slot = ring.owner(client).slot
            except EmptyRingError:
                unrouted, decisions = len(decisions), ()
        for decision in decisions:
            expires = event.ts + self.config.command_ttl_s
            commands.append(
                (
                    slot,
                    PrefetchCommand(
                        command_id=command_id(client, decision.content_id, event.event_id),
                        client_id=client,
                        content_id=decision.content_id,
                        probability=decision.probability,
                        rank=decision.rank,
                        model=self.config.model_name,
                        issued_at=event.ts,
                        expires_at=expires,
                        event_ts=event.ts,
                    ),
                )
            )
            prefetched[decision.content_id] = expires
        new = ClientRecord(
            session=session,
            last_prediction=[item for item, _ in predictions[: self.config.top_k]],
            tokens=planned.state.tokens,
            counted_at=planned.state.counted_at,
            threshold_offset=planned.state.offset,
            prefetched=prefetched,
            guard=guard_state,
            partition=partition,
            offset=offset,
            events=record.events + 1,
            hits=record.hits + int(hit),
            recent_events=[*record.recent_events[-(RECENT_EVENT_IDS - 1) :], event.event_id],
        )
        return Step(
            new,
            predictions,
            commands,
            alert=alert,
            scored=scored,
            hit=hit,
            unrouted=unrouted,
            blocked=blocked,
            threshold=planned.threshold,
        )

    def on_feedback(self, feedback: Feedback, record: ClientRecord | None) -> ClientRecord:
        """A hit lowers the client's threshold a little, an unused or expired prefetch raises
        it; a miss leaves it (the model, not the threshold, missed the item)."""
        record = record or ClientRecord()
        state = apply_feedback(record.planner_state(), feedback.outcome, self.config.planner)
        prefetched = dict(record.prefetched)
        if feedback.outcome in ("unused", "expired"):
            prefetched.pop(feedback.content_id, None)
        return msgspec.structs.replace(record, threshold_offset=state.offset, prefetched=prefetched)


def engine_for(settings: Settings) -> Engine:
    """A fresh engine as the worker makes it: the one place its parts and settings meet, so
    the offline simulation (streams.simulate) runs exactly the worker's step."""
    config = EngineConfig(
        top_k=settings.top_k,
        prefetch_k=settings.prefetch_top_k,
        command_ttl_s=settings.prefetch_ttl_s,
    )
    return Engine(Foresight(), config, guard=AbuseGuard())
