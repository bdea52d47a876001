"""Chat text helpers shared by readers and by training.

Storage is faithful: a message's text is kept exactly as sent (emoji, RTL marks, zero-width
joiners, member-only emotes). Training must not see what reveals the label, so it calls
`strip_member_signals` on model inputs: YouTube's channel-membership emotes are written
`:_name:` (a leading underscore after the colon) and only paying members can post them.
"""

from __future__ import annotations

import re

# `:_name:` = a channel's member-only custom emoji. Global YouTube emoji (":elbowcough:") and
# Unicode emoji shortcuts (":face_with_tears_of_joy:") have no underscore and are not signals.
MEMBER_EMOJI = re.compile(r":_[^:\s]{1,64}:")
_SPACES = re.compile(r"[ \t]{2,}")

# Badge titles that mean "paid channel member", in the locales YouTube renders badges in.
# The badge is a custom image with a tooltip such as "Member (6 months)", "New member",
# "メンバー（2 か月）", "Mitglied (1 Jahr)", "Membro (1 anno)", "Anggota (2 bulan)".
_MEMBER_TITLE = re.compile(
    r"member|mitglied|membro|miembro|membre|anggota|^lid\b|medlem|członek|участник|üye|"
    r"thành viên|สมาชิก|メンバー|멤버|회원|会员|會員|成員|成员",
    re.IGNORECASE,
)
_MODERATOR_TITLE = re.compile(r"moderator|moderador|modérateur|moderatore|モデレーター|관리자|版主", re.I)
_OWNER_TITLE = re.compile(r"^(owner|inhaber|propietario|propriétaire|proprietario|所有者|소유자)$", re.I)


def strip_member_signals(text: str) -> str:
    """Remove member-only emotes (`:_name:`) from a model input; other text is left as it is."""
    if ":_" not in text:
        return text
    stripped = MEMBER_EMOJI.sub("", text)
    return _SPACES.sub(" ", stripped).strip()


def has_member_signal(text: str) -> bool:
    return ":_" in text and MEMBER_EMOJI.search(text) is not None


def is_member_badge(title: str) -> bool:
    return bool(_MEMBER_TITLE.search(title)) and not _MODERATOR_TITLE.search(title)


def is_moderator_badge(title: str) -> bool:
    return bool(_MODERATOR_TITLE.search(title))


def is_owner_badge(title: str) -> bool:
    return bool(_OWNER_TITLE.match(title.strip()))
