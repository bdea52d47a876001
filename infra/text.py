"""What in chat text reveals paid membership: one rule shared by readers, training and the live scorer.

Storage is faithful (text is kept exactly as sent); model inputs must not see what gives the
label away. YouTube's channel-membership emotes are written `:_name:` (an underscore after the
colon) and only paying members can post them. Global YouTube emoji (":elbowcough:") and Unicode
emoji shortcuts (":face_with_tears_of_joy:") have no underscore and are not signals.
"""

from __future__ import annotations

import re

MEMBER_EMOJI = re.compile(r":_[^:\s]{1,64}:")
_SPACES = re.compile(r"[ \t]{2,}")


def strip_member_signals(text: str) -> str:
    """Remove member-only emotes (`:_name:`) from a model input; other text is left as it is."""
    if ":_" not in text:
        return text
    stripped = MEMBER_EMOJI.sub("", text)
    return _SPACES.sub(" ", stripped).strip()


def has_member_signal(text: str) -> bool:
    return ":_" in text and MEMBER_EMOJI.search(text) is not None
