"""What a chat cluster keeps in Redis: the keys (:class:`Keys`), the Lua scripts that change
them atomically, and reading a room's stream entries back as lines.

Every key is under ``rudp-chat:`` (one cluster per Redis database: ``redis://HOST:PORT/DB``);
PROTOCOL.md §12, Cluster, describes them for someone writing another node.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from .clusterconfig import SESSION_RETENTION_MS
from .protocol import MAX_TEXT_CHARS, MAX_TIME, MAX_TOPIC_CHARS, Chat, Topic
from .store import Journal
from .text import MAX_NAME_CHARS

__all__ = [
    "CLAIM_SCRIPT",
    "COMMIT_SCRIPT",
    "RELEASE_SCRIPT",
    "ROOMS_LOG_MAXLEN",
    "Entries",
    "Keys",
    "Reply",
    "commit_arguments",
    "entry_of",
]

ROOMS_LOG_MAXLEN: Final = 1000  # the rooms and presence logs: read within ms, a short tail does


COMMIT_SCRIPT: Final = """
-- KEYS: the seq counters (a hash), the rooms log (a stream), then for each proposal its room's
-- stream and its sender's session, then for each other acknowledged say its session.
-- ARGV: MAXLEN, session retention (ms), the number of proposals, then per proposal
-- room, say id, time, sender, text, kind (0: a line, 1: an action line, t: a topic), then per
-- other say its id.
-- Returns each proposal's seq: 0 for a topic, and for one whose (session, id) was stored before.
local maxlen, keep, count = ARGV[1], ARGV[2], tonumber(ARGV[3])
local seqs, a, k = {}, 4, 3
for i = 1, count do
    local stream, session, room, id = KEYS[k], KEYS[k + 1], ARGV[a], tonumber(ARGV[a + 1])
    seqs[i] = 0
    if tonumber(redis.call('GET', session) or '0') < id then
        if redis.call('HSETNX', KEYS[1], room, 0) == 1 then
            redis.call('XADD', KEYS[2], 'MAXLEN', '~', ROOMS_LOG_MAXLEN, '*', 'room', room)
        end
        if ARGV[a + 5] == 't' then
            local seq = redis.call('HGET', KEYS[1], room)
            redis.call('XADD', stream, 'MAXLEN', '~', maxlen, seq .. '-*',
                'sender', ARGV[a + 3], 'topic', ARGV[a + 4])
        else
            local seq = redis.call('HINCRBY', KEYS[1], room, 1)
            redis.call('XADD', stream, 'MAXLEN', '~', maxlen, seq .. '-0', 'time', ARGV[a + 2],
                'sender', ARGV[a + 3], 'text', ARGV[a + 4], 'action', ARGV[a + 5])
            seqs[i] = seq
        end
        redis.call('SET', session, id, 'PX', keep)
    end
    a, k = a + 6, k + 2
end
-- Always a write (it renews the session's retention too): a WAIT after this script then
-- waits for a replication offset past every line this batch's proposals ever stored.
while k <= #KEYS do
    local id = math.max(tonumber(ARGV[a]), tonumber(redis.call('GET', KEYS[k]) or '0'))
    redis.call('SET', KEYS[k], id, 'PX', keep)
    a, k = a + 1, k + 1
end
return seqs
""".replace("ROOMS_LOG_MAXLEN", str(ROOMS_LOG_MAXLEN))
"""Orders and stores a batch of lines, topics and session ids atomically (one script: one
entry in Redis's append-only file). A line is entry ``<seq>-0`` of its room's stream; a topic
is entry ``<seq>-<n>``, after line ``seq`` (``n`` from 1), so it numbers no line."""

CLAIM_SCRIPT: Final = """
-- KEYS: a name's look-alike classes. ARGV: the claimant "<node> <session>", its node, its
-- session, the TTL (ms). Returns "" when the claimant may use the name (its classes are set to
-- it, except those another session of its own node holds: that node's room decides), else
-- the holder that another node serves.
for _, key in ipairs(KEYS) do
    local holder = redis.call('GET', key)
    if holder and holder ~= ARGV[1] then
        local node, session = string.match(holder, '^(%S+) (%S+)$')
        if session ~= ARGV[3] and node ~= ARGV[2] then
            return holder
        end
    end
end
for _, key in ipairs(KEYS) do
    local holder = redis.call('GET', key)
    if not holder or holder == ARGV[1] or string.match(holder, ' (%S+)$') == ARGV[3] then
        redis.call('SET', key, ARGV[1], 'PX', ARGV[4])
    end
end
return ''
"""
"""Claims a name cluster-wide for a ``hello``: at most one online session per look-alike class."""

RELEASE_SCRIPT: Final = """
-- KEYS: names. ARGV[1]: the holder "<node> <session>" whose they were. Deletes those it holds.
for _, key in ipairs(KEYS) do
    if redis.call('GET', key) == ARGV[1] then
        redis.call('DEL', key)
    end
end
return 0
"""
"""Frees the names of users who left (or renamed) since the last beat, if still theirs."""

Entries = list[tuple[bytes, dict[bytes, bytes]]]
"""Stream entries as redis-py returns them: (id, fields)."""
Reply = list[tuple[bytes, Entries]]
"""What ``XREAD`` answers: per stream, its new entries."""


@dataclass(frozen=True, slots=True)
class Keys:
    """The Redis keys of one cluster (all under ``rudp-chat:``)."""

    prefix: str = "rudp-chat:"

    @property
    def counters(self) -> str:
        """Hash: room → its highest ``seq`` (every room with a line)."""
        return self.prefix + "seq"

    @property
    def rooms_log(self) -> str:
        """Stream: one entry per room made, so followers start following it at once."""
        return self.prefix + "rooms"

    @property
    def presence_log(self) -> str:
        """Stream: one entry per change of a node's roster (field ``node``), so the others
        hear it at once rather than at their next beat."""
        return self.prefix + "presence"

    def room(self, room: str) -> str:
        """Stream: the room's lines, entry id ``<seq>-0``."""
        return f"{self.prefix}room:{room}"

    def session(self, session: bytes) -> str:
        """String: the highest processed ``say`` id of a client session."""
        return f"{self.prefix}session:{session.hex()}"

    @property
    def nodes(self) -> str:
        """Set: every node name that ever beat (a node is live while its roster is there)."""
        return self.prefix + "nodes"

    def roster(self, node: str) -> str:
        """String, expiring: the node's users (:func:`encode_roster`), refreshed each beat."""
        return f"{self.prefix}roster:{node}"

    def name(self, skeleton: str) -> str:
        """String, expiring: ``"<node> <session hex>"``, the online holder of a look-alike
        class of names (:func:`name_skeletons`)."""
        return f"{self.prefix}name:{skeleton}"


def commit_arguments(
    keys: Keys, journal: Journal, maxlen: int
) -> tuple[list[str], list[str | int | float]]:
    """The ``KEYS`` and ``ARGV`` of :data:`COMMIT_SCRIPT` for ``journal``'s proposals and ids."""
    names = [keys.counters, keys.rooms_log]
    args: list[str | int | float] = [
        maxlen,
        SESSION_RETENTION_MS,
        len(journal.proposed),
    ]
    for proposal in journal.proposed:
        said = proposal.said
        names += [keys.room(said.room), keys.session(proposal.session)]
        if isinstance(said, Topic):
            args += [said.room, proposal.id, 0, said.name, said.topic, "t"]
        else:
            args += [said.room, proposal.id, repr(said.time), said.sender, said.text]
            args.append(int(said.action))
    for session, acked in journal.acked:  # after the lines: they check the older ids
        names.append(keys.session(session))
        args.append(acked)
    return names, args


def entry_of(room: str, entry_id: bytes, fields: Mapping[bytes, bytes]) -> Chat | Topic | None:
    """The line or topic a stream entry of ``room`` holds; None if it is not one a node of
    this cluster wrote (a bad id, a missing field, a value no client would accept)."""
    seq, _, sub = entry_id.partition(b"-")
    try:
        if not seq.isdigit() or not sub.isdigit():
            return None
        sender = fields[b"sender"].decode()
        if not 0 < len(sender) <= MAX_NAME_CHARS:
            return None
        if sub != b"0":
            topic = fields[b"topic"].decode()
            return Topic(room, sender, topic) if len(topic) <= MAX_TOPIC_CHARS else None
        when, text = float(fields[b"time"]), fields[b"text"].decode()
        if not 0.0 <= when <= MAX_TIME or len(text) > MAX_TEXT_CHARS or int(seq) < 1:
            return None
        return Chat(int(seq), when, sender, text, fields[b"action"] == b"1", room=room)
    except (KeyError, ValueError):  # UnicodeDecodeError is a ValueError
        return None
