"""Inputs that people and foreign nodes publish: latched topics from any publisher, and text
bounds, so that what a node accepts and what it logs stay bounded.

A transient_local subscription matches only transient_local publishers (``ros2 topic pub`` and
most nodes publish volatile), while a volatile one matches both but misses what was published
before it started. ``subscribe_latched`` makes both and hands each sample to the callback once.
"""

from __future__ import annotations

from collections import deque

from rclpy.event_handler import SubscriptionEventCallbacks
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

from world_env_common.ros import qos

#: Longest instruction (characters) the policy and the reflector accept. LIBERO's longest is
#: about 100; a bound keeps a stray megabyte out of the tokenizer at every chunk.
MAX_INSTRUCTION_CHARS = 512
#: Characters of an input that a log line or a reason shows at most.
LOG_CHARS = 120

_VOLATILE = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=qos.LATCHED.depth, reliability=ReliabilityPolicy.RELIABLE,
                       durability=DurabilityPolicy.VOLATILE)
#: Samples remembered to drop the second copy (one per subscription) of a sample.
_SEEN = 64


def clip(text: str, limit: int = LOG_CHARS) -> str:
    """``text`` cut to ``limit`` characters, saying how long it was, for logs and reasons."""
    text = str(text)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text)} characters)"


def instruction_problem(text: str) -> str | None:
    """Why an instruction is refused (None: accepted). Empty instructions are the caller's matter."""
    if len(text) > MAX_INSTRUCTION_CHARS:
        return (f"instruction refused: {len(text)} characters, more than the {MAX_INSTRUCTION_CHARS} allowed "
                f"(starts '{clip(text, 40)}')")
    return None


def subscribe_latched(node, msg_type, topic: str, callback) -> None:
    """Subscribe ``callback(msg)`` to a latched input: transient_local publishers (their last
    sample reaches a node that starts later) and volatile ones (``ros2 topic pub``) alike.
    A transient_local publisher matches both subscriptions: its second copy of a sample is
    dropped, so each sample arrives once and, per publisher, in order."""
    seen: deque = deque(maxlen=_SEEN)

    def on_message(msg, info) -> None:
        gid = info.get("publisher_gid")
        key = ((bytes(gid["data"]) if gid else None), info.get("publication_sequence_number"),
               info["source_timestamp"])
        if key in seen:
            return
        seen.append(key)
        callback(msg)

    # A volatile publisher is heard by the volatile subscription: rclpy's default warning that the
    # transient_local one cannot match it ("no messages will be received") would be false.
    node.create_subscription(msg_type, topic, on_message, qos.LATCHED,
                             event_callbacks=SubscriptionEventCallbacks(incompatible_qos=lambda event: None))
    node.create_subscription(msg_type, topic, on_message, _VOLATILE)
