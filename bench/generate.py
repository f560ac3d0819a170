#!/usr/bin/env python3
"""Deterministic Cleeng exports for the benchmark: the Web Subscription Data template
header and N subscribers, every optional column filled in a realistic share of rows.

    generate.py ROWS OUT.csv [--changed-every K]

--changed-every K changes the traits of every K-th subscriber (10 gives the 10%-changed
snapshot of the same subscribers). Expiry dates are in 2099, so the files stay valid
whatever today's date is.
"""

import argparse
import sys

HEADER = (
    "User email*,Offer ID*,Expiry date*,Status*,"
    "Payment method ID (will be used also for payment gateway)*,Subscription external ID,"
    "External properties,Season Index (required for seasonal offer),Coupon Code,"
    "Campaign name,Coupon Already Used\r\n"
)

CAMPAIGNS = ["Winter season", "Spring sale", "Black Friday", "", "Summer pass", ""]


def row(i: int, changed: bool) -> str:
    # The changed variant moves the expiry a year on and flips the status, the two
    # traits Cleeng exports change most.
    year = 2099 if not changed else 2098
    status = ("active", "stopped")[(i + changed) % 2]
    external_id = f"sub-{i:08d}" if i % 3 else ""
    props = f'"{{""plan"": ""p{i % 7}"", ""source"": ""web""}}"' if i % 4 == 0 else ""
    season = str(1 + i % 4) if i % 5 == 0 else ""
    coupon = f"CODE{i % 97}" if i % 6 == 0 else ""
    uses = str(i % 3) if coupon else ""
    return (
        f"user{i:08d}@example{i % 50}.com,S{100000000 + i % 900:09d}_PL,"
        f"{year}-{1 + i % 12:02d}-{1 + i % 28:02d},{status},{1 + i % 9},{external_id},"
        f"{props},{season},{coupon},{CAMPAIGNS[i % len(CAMPAIGNS)]},{uses}\r\n"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("rows", type=int)
    parser.add_argument("out")
    parser.add_argument("--changed-every", type=int, default=0)
    args = parser.parse_args()
    every = args.changed_every
    with open(args.out, "w", encoding="utf-8", newline="") as out:
        out.write(HEADER)
        batch = []
        for i in range(args.rows):
            batch.append(row(i, every > 0 and i % every == 0))
            if len(batch) == 10_000:
                out.write("".join(batch))
                batch.clear()
        out.write("".join(batch))
    return 0


if __name__ == "__main__":
    sys.exit(main())
