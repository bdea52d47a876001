"""Chat text helpers for readers: badge titles in YouTube's locales.

Storage is faithful: a message's text is kept exactly as sent (emoji, RTL marks, zero-width
joiners, member-only emotes). The rule for what reveals membership in text lives in infra/text.py
(re-exported here), because training and the live scorer apply it to model inputs too.
"""

from __future__ import annotations

import re

from infra.text import MEMBER_EMOJI, has_member_signal, strip_member_signals

__all__ = [
    "MEMBER_EMOJI", "has_member_signal", "is_member_badge", "is_moderator_badge", "is_owner_badge",
    "strip_member_signals",
]

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


def is_member_badge(title: str) -> bool:
    return bool(_MEMBER_TITLE.search(title)) and not _MODERATOR_TITLE.search(title)


def is_moderator_badge(title: str) -> bool:
    return bool(_MODERATOR_TITLE.search(title))


def is_owner_badge(title: str) -> bool:
    return bool(_OWNER_TITLE.match(title.strip()))
