"""The held-out rule, written once: RBTV 2017-09 and HundredBeans `wxc-indonesia` are evaluation only.

Pretraining (`training.pretrain_mlm`), dataset building and so fitting (`training.build_dataset`)
all ask this one function, so no held-out stream can reach a model's weights, its early stopping,
its calibration or its thresholds by one path while another path keeps it out.
"""

from __future__ import annotations

from datetime import datetime

WXC_INDONESIA_CHANNEL = "UCRBgZ9ondGvlcR-E_snJY2Q"
RBTV_HELD_OUT_MONTH = "2017-09"


def is_held_out(*, stream_id: str, channel: str = "", source: str = "", title: str = "",
                start: datetime | None = None) -> bool:
    """True for any stream of the two held-out sets, however it is named: by channel id or folder
    (`wxc-indonesia`), or as RBTV by its id (`rbtv-2017-09-..`), path or start month."""
    text = f"{source} {channel} {stream_id} {title}".lower()
    if "wxc-indonesia" in text or "wxc indonesia" in text or WXC_INDONESIA_CHANNEL.lower() in text:
        return True
    if "rbtv" not in text:
        return False
    if f"rbtv-{RBTV_HELD_OUT_MONTH}" in text:
        return True
    return start is not None and start.strftime("%Y-%m") == RBTV_HELD_OUT_MONTH
