"""Topic names, topic filters and the two indexes built on them.

This module owns MQTT topic syntax (validation of names and filters, the ``$share/{group}/``
prefix), the subscription trie that maps a published topic to every matching subscription,
the round-robin state of shared subscription groups, and the level trie of retained
messages. It is sans-I/O and knows nothing about sessions or packets: the router is its only
caller. ``SubscriptionTrie.match`` runs once per PUBLISH, so it is written for speed (slotted
nodes, a loop with an explicit stack, no allocation beyond the split and the result unless a
'+' branch needs the stack).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Generic, TypeVar

__all__ = [
    "RetainedStore",
    "SharedGroup",
    "SubscriptionTrie",
    "parse_shared",
    "topic_levels",
    "validate_topic_filter",
    "validate_topic_name",
]

V = TypeVar("V")
M = TypeVar("M")

_SHARE_PREFIX = "$share/"
_MAX_TOPIC_BYTES = 65535  # a UTF-8 encoded string is at most 65535 bytes [MQTT-1.5.4]


def _utf8_ok(text: str) -> bool:
    """True if `text` is non-empty, has no NUL and fits a UTF-8 string field."""
    if not text:
        return False  # [MQTT-4.7.3-1] topic names and filters are at least one character
    if "\x00" in text:
        return False  # [MQTT-4.7.3-2] no U+0000 (the codec rejects it first)
    if text.isascii():
        return len(text) <= _MAX_TOPIC_BYTES  # [MQTT-4.7.3-3]
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:  # lone surrogates are not valid UTF-8 [MQTT-1.5.4-1]
        return False
    return size <= _MAX_TOPIC_BYTES  # [MQTT-4.7.3-3]


def _plain_filter_ok(topic_filter: str) -> bool:
    """Validate a filter that is not (or is no longer) prefixed with ``$share/``."""
    if not _utf8_ok(topic_filter):
        return False
    if "+" not in topic_filter and "#" not in topic_filter:
        return True
    levels = topic_filter.split("/")
    last = len(levels) - 1
    for index, level in enumerate(levels):
        if "#" in level:
            # [MQTT-4.7.1-2] '#' occupies a whole level and is the last character
            if level != "#" or index != last:
                return False
        elif "+" in level and level != "+":
            return False  # [MQTT-4.7.1-3] '+' occupies an entire level
    return True


def validate_topic_name(topic: str) -> bool:
    """True if `topic` may be the Topic Name of a PUBLISH."""
    # [MQTT-4.7.1-1] wildcards are not allowed in topic names; [MQTT-4.7.3-1] non-empty
    if "+" in topic or "#" in topic:
        return False
    return _utf8_ok(topic)


def validate_topic_filter(topic_filter: str) -> bool:
    """True if `topic_filter` may appear in a SUBSCRIBE/UNSUBSCRIBE, shared forms included."""
    if topic_filter.startswith(_SHARE_PREFIX):
        if not _utf8_ok(topic_filter):
            return False
        try:
            parse_shared(topic_filter)
        except ValueError:
            return False
        return True
    return _plain_filter_ok(topic_filter)


def parse_shared(topic_filter: str) -> tuple[str | None, str]:
    """Split ``$share/{group}/{filter}`` into ``(group, filter)``.

    Anything not starting with ``$share/`` comes back as ``(None, topic_filter)`` unchecked.
    A shared form with an empty group, a group containing '+' or '#', a missing filter part
    or a filter part that fails `validate_topic_filter` raises ValueError.
    """
    if not topic_filter.startswith(_SHARE_PREFIX):
        return None, topic_filter
    group, sep, rest = topic_filter[len(_SHARE_PREFIX) :].partition("/")
    # [MQTT-4.8.2-1] a ShareName of at least one character, then '/', then a Topic Filter
    if not group:
        raise ValueError(f"shared subscription without a share name: {topic_filter!r}")
    # [MQTT-4.8.2-2] the ShareName must not contain '/', '+' or '#'
    if "+" in group or "#" in group:
        raise ValueError(f"wildcard in share name: {topic_filter!r}")
    if not sep or not rest:
        raise ValueError(f"shared subscription without a topic filter: {topic_filter!r}")
    if not _plain_filter_ok(rest):
        raise ValueError(f"invalid topic filter in shared subscription: {topic_filter!r}")
    return group, rest


def topic_levels(topic: str) -> list[str]:
    """The levels of a topic name or filter; '/' separates them [MQTT-4.7.1]."""
    return topic.split("/")


def _group_ok(group: str) -> bool:
    return bool(group) and "/" not in group and "+" not in group and "#" not in group


class SharedGroup(Generic[V]):
    """The members of one shared subscription group on one topic filter.

    `members` is owned by the `SubscriptionTrie`: change it only through
    `SubscriptionTrie.add`/`remove`, which keep the round-robin cursor consistent.
    """

    __slots__ = ("_cursor", "_last", "_order", "members", "name", "topic_filter")

    def __init__(self, name: str, topic_filter: str) -> None:
        self.name = name
        self.topic_filter = topic_filter
        self.members: dict[str, V] = {}
        # Snapshot of members.items() that `_cursor` indexes; None after a membership change.
        self._order: list[tuple[str, V]] | None = []
        self._cursor = 0  # index in _order of the member to try next
        self._last: str | None = None  # member returned last, valid while _order is None

    def __len__(self) -> int:
        return len(self.members)

    def __repr__(self) -> str:
        return f"SharedGroup({self.name!r}, {self.topic_filter!r}, {list(self.members)!r})"

    def next_member(self, eligible: Callable[[str, V], bool] | None = None) -> tuple[str, V] | None:
        """Return the member after the one returned last, skipping ineligible ones.

        None when no member is eligible. O(1) when the next member is eligible and
        membership has not changed since the last call.
        """
        order = self._order
        if order is None:
            order = self._rebuild()
        size = len(order)
        if not size:
            return None
        index = self._cursor
        if eligible is None:
            if index >= size:
                index = 0
            self._cursor = index + 1
            return order[index]
        for _ in range(size):
            if index >= size:
                index = 0
            item = order[index]
            index += 1
            if eligible(item[0], item[1]):
                self._cursor = index
                return item
        return None

    def _rebuild(self) -> list[tuple[str, V]]:
        order = list(self.members.items())
        last = self._last
        cursor = 0
        if last is not None:
            for position, item in enumerate(order):
                if item[0] == last:
                    cursor = position + 1
                    break
        self._order = order
        self._cursor = cursor
        self._last = None
        return order

    def _freeze_position(self) -> None:
        """Before a membership change: remember who was returned last by client id."""
        order = self._order
        if order is not None:
            cursor = self._cursor
            self._last = order[cursor - 1][0] if 0 < cursor <= len(order) else None
            self._order = None

    def _put(self, client_id: str, value: V) -> bool:
        self._freeze_position()
        replaced = client_id in self.members
        self.members[client_id] = value  # a replaced member keeps its place in the rotation
        return replaced

    def _discard(self, client_id: str) -> bool:
        members = self.members
        if client_id not in members:
            return False
        self._freeze_position()
        if client_id == self._last:
            # Step back to the predecessor so the rotation resumes with the successor.
            keys = list(members)
            self._last = None if len(keys) == 1 else keys[keys.index(client_id) - 1]
        del members[client_id]
        return True


class _Node(Generic[V]):
    """One level of the subscription trie; '+' and '#' children live outside `children`."""

    __slots__ = ("children", "hash", "plus", "shared", "subs")

    def __init__(self) -> None:
        self.children: dict[str, _Node[V]] = {}
        self.plus: _Node[V] | None = None
        self.hash: _Node[V] | None = None
        self.subs: dict[str, V] | None = None  # None when empty
        self.shared: dict[str, SharedGroup[V]] | None = None  # None when empty

    def is_empty(self) -> bool:
        return (
            not self.children
            and self.plus is None
            and self.hash is None
            and self.subs is None
            and self.shared is None
        )


class SubscriptionTrie(Generic[V]):
    """Maps topic filters to subscriptions. Keyed by client id: one entry per
    (filter, client_id) for normal subscriptions, per (group, filter, client_id) for
    shared ones."""

    __slots__ = ("_count", "_root")

    def __init__(self) -> None:
        self._root: _Node[V] = _Node()
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, topic_filter: str, client_id: str, value: V, group: str | None = None) -> bool:
        """Store `value` for the key; True if it replaced an existing entry.

        `topic_filter` is the plain filter (the part after ``$share/{group}/`` for shared
        subscriptions). Raises ValueError for an invalid filter or group name.
        """
        if not _plain_filter_ok(topic_filter):
            raise ValueError(f"invalid topic filter: {topic_filter!r}")
        if group is not None and not _group_ok(group):
            raise ValueError(f"invalid share name: {group!r}")
        node = self._root
        for level in topic_filter.split("/"):
            if level == "+":
                child = node.plus
                if child is None:
                    child = node.plus = _Node()
            elif level == "#":
                child = node.hash
                if child is None:
                    child = node.hash = _Node()
            else:
                child = node.children.get(level)
                if child is None:
                    child = node.children[level] = _Node()
            node = child
        if group is None:
            subs = node.subs
            if subs is None:
                subs = node.subs = {}
            replaced = client_id in subs
            subs[client_id] = value
        else:
            groups = node.shared
            if groups is None:
                groups = node.shared = {}
            shared_group = groups.get(group)
            if shared_group is None:
                shared_group = groups[group] = SharedGroup(group, topic_filter)
            replaced = shared_group._put(client_id, value)
        if not replaced:
            self._count += 1
        return replaced

    def remove(self, topic_filter: str, client_id: str, group: str | None = None) -> bool:
        """Drop the entry for the key; True if it existed. Empty nodes are pruned."""
        node = self._root
        path: list[tuple[_Node[V], str]] = []
        for level in topic_filter.split("/"):
            if level == "+":
                child = node.plus
            elif level == "#":
                child = node.hash
            else:
                child = node.children.get(level)
            if child is None:
                return False
            path.append((node, level))
            node = child
        if group is None:
            subs = node.subs
            if subs is None or client_id not in subs:
                return False
            del subs[client_id]
            if not subs:
                node.subs = None
        else:
            groups = node.shared
            shared_group = None if groups is None else groups.get(group)
            if groups is None or shared_group is None or not shared_group._discard(client_id):
                return False
            if not shared_group.members:
                del groups[group]
                if not groups:
                    node.shared = None
        self._count -= 1
        for parent, level in reversed(path):
            if not node.is_empty():
                break
            if level == "+":
                parent.plus = None
            elif level == "#":
                parent.hash = None
            else:
                del parent.children[level]
            node = parent
        return True

    def match(self, topic: str) -> tuple[list[dict[str, V]], list[SharedGroup[V]]]:
        """Every subscription whose filter matches the topic name `topic`.

        Returns the client_id -> value dicts of normal subscriptions and the shared groups
        of each matching node (empty ones are never returned). The dicts and groups are the
        trie's own objects: read them, do not mutate them, and do not add/remove
        subscriptions while iterating them.
        """
        normal: list[dict[str, V]] = []
        shared: list[SharedGroup[V]] = []
        levels = topic.split("/")
        size = len(levels)
        root = self._root
        stack: list[tuple[_Node[V], int]] | None = None
        # [MQTT-4.7.2-1] wildcards in the first level never match a topic starting with '$'
        if topic[:1] != "$":
            hash_node = root.hash
            if hash_node is not None:
                subs = hash_node.subs
                if subs:
                    normal.append(subs)
                groups = hash_node.shared
                if groups:
                    shared.extend(groups.values())
            if root.plus is not None:
                stack = [(root.plus, 1)]
        node = root.children.get(levels[0])
        index = 1
        while True:
            if node is not None:
                hash_node = node.hash
                if hash_node is not None:
                    # [MQTT-4.7.1-2] 'a/#' matches 'a' and everything below it
                    subs = hash_node.subs
                    if subs:
                        normal.append(subs)
                    groups = hash_node.shared
                    if groups:
                        shared.extend(groups.values())
                if index == size:
                    subs = node.subs
                    if subs:
                        normal.append(subs)
                    groups = node.shared
                    if groups:
                        shared.extend(groups.values())
                else:
                    plus_node = node.plus
                    if plus_node is not None:
                        # [MQTT-4.7.1-3] '+' matches exactly one level, possibly empty
                        if stack is None:
                            stack = [(plus_node, index + 1)]
                        else:
                            stack.append((plus_node, index + 1))
                    node = node.children.get(levels[index])
                    index += 1
                    continue
            if not stack:
                return normal, shared
            node, index = stack.pop()


class _RetainedNode(Generic[M]):
    __slots__ = ("children", "entry")

    def __init__(self) -> None:
        self.children: dict[str, _RetainedNode[M]] = {}
        self.entry: tuple[str, M] | None = None  # (topic, message) when one is retained here


class RetainedStore(Generic[M]):
    """Retained messages by topic name, with a level trie for wildcard look-ups."""

    __slots__ = ("_index", "_root")

    def __init__(self) -> None:
        self._root: _RetainedNode[M] = _RetainedNode()
        self._index: dict[str, _RetainedNode[M]] = {}  # topic -> node holding its entry

    def __len__(self) -> int:
        return len(self._index)

    def set(self, topic: str, message: M) -> None:
        """Retain `message` for `topic`, replacing any previous one."""
        node = self._index.get(topic)
        if node is None:
            if not validate_topic_name(topic):
                raise ValueError(f"invalid topic name: {topic!r}")
            node = self._root
            for level in topic.split("/"):
                child = node.children.get(level)
                if child is None:
                    child = node.children[level] = _RetainedNode()
                node = child
            self._index[topic] = node
        node.entry = (topic, message)

    def delete(self, topic: str) -> bool:
        """Forget the message retained for `topic`; True if there was one."""
        node = self._index.pop(topic, None)
        if node is None:
            return False
        node.entry = None
        if node.children:
            return True
        path: list[tuple[_RetainedNode[M], str]] = []
        parent = self._root
        for level in topic.split("/"):
            path.append((parent, level))
            parent = parent.children[level]
        for parent, level in reversed(path):
            child = parent.children[level]
            if child.entry is not None or child.children:
                break
            del parent.children[level]
        return True

    def get(self, topic: str) -> M | None:
        node = self._index.get(topic)
        if node is None or node.entry is None:
            return None
        return node.entry[1]

    def items(self) -> Iterator[tuple[str, M]]:
        """(topic, message) pairs; do not set/delete while iterating."""
        for node in self._index.values():
            if node.entry is not None:
                yield node.entry

    def match(self, topic_filter: str) -> list[tuple[str, M]]:
        """(topic, message) of every retained message matching a plain topic filter."""
        if "+" not in topic_filter and "#" not in topic_filter:
            node = self._index.get(topic_filter)
            if node is None or node.entry is None:
                return []
            return [node.entry]
        out: list[tuple[str, M]] = []
        levels = topic_filter.split("/")
        size = len(levels)
        stack: list[tuple[_RetainedNode[M], int]] = [(self._root, 0)]
        while stack:
            node, index = stack.pop()
            if index == size:
                if node.entry is not None:
                    out.append(node.entry)
                continue
            level = levels[index]
            if level == "#":
                if index == 0:
                    # [MQTT-4.7.2-1] '#' alone does not match topics starting with '$'
                    below = [c for k, c in node.children.items() if k[:1] != "$"]
                else:
                    # [MQTT-4.7.1-2] 'sport/#' matches 'sport' itself
                    if node.entry is not None:
                        out.append(node.entry)
                    below = list(node.children.values())
                while below:
                    node = below.pop()
                    if node.entry is not None:
                        out.append(node.entry)
                    if node.children:
                        below.extend(node.children.values())
            elif level == "+":
                children: Iterable[_RetainedNode[M]]
                if index == 0:
                    # [MQTT-4.7.2-1] '+' in the first level does not match '$...' topics
                    children = [c for k, c in node.children.items() if k[:1] != "$"]
                else:
                    children = node.children.values()
                index += 1
                if index == size:  # '+' is the last level: take the entries right here
                    for child in children:
                        if child.entry is not None:
                            out.append(child.entry)
                    continue
                level = levels[index]
                if level == "+" or level == "#":
                    stack.extend([(child, index) for child in children])
                else:  # a literal level follows: step over it with one dict look-up each
                    index += 1
                    for child in children:
                        grandchild = child.children.get(level)
                        if grandchild is not None:
                            stack.append((grandchild, index))
            else:
                literal = node.children.get(level)
                if literal is not None:
                    stack.append((literal, index + 1))
        return out
