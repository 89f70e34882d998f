"""The COD settlement file a partner sends the office: one line per amount its couriers collected.

The column names are the sandbox's guess at each partner's export (none is public) and match the
courier service's ``SettlementFormat`` mappings: J&T ``billCode, txlogisticId, codValue, payTime``
(WIB, no offset), Pos ``awb, orderid, codvalue, paid_at`` (RFC 3339). A collection the partner
reported twice with the same event id is one line; forged callbacks are not the partner's facts.
"""

from __future__ import annotations

import csv
import io
from datetime import date, datetime, timedelta

from sandbox.callbacks import WIB, format_jnt_time
from sandbox.state import State, rfc3339

_COLUMNS = {
    "jnt": ("billCode", "txlogisticId", "codValue", "payTime"),
    "pos": ("awb", "orderid", "codvalue", "paid_at"),
}


def _in_day(moment: datetime, day: date) -> bool:
    start = datetime.combine(day, datetime.min.time(), tzinfo=WIB)
    return start <= moment < start + timedelta(days=1)


def settlement_csv(state: State, partner: str, day: date) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(_COLUMNS[partner])
    for shipment in state.shipments.values():
        if shipment.partner != partner:
            continue
        for record in shipment.callbacks:
            if record.kind != "cod_collected" or not record.applies:
                continue
            if not _in_day(record.occurred_at, day):
                continue
            paid = (format_jnt_time(record.occurred_at) if partner == "jnt"
                    else rfc3339(record.occurred_at))
            writer.writerow([shipment.waybill, shipment.order_ref, record.cod_amount, paid])
    return out.getvalue()
