"""Revenue by month from the sales database: a spreadsheet, and a summary in Slack."""

import os
from collections import defaultdict
from pathlib import Path

from openpyxl import Workbook

from servicebay import Client

api = Client()  # BAY_URL and INTERNAL_API_KEY, as the platform gives every run

# Step 1: pull the orders, page by page
orders = []
cursor = None
while True:
    params: dict[str, str | int] = {"order": "ordered_on.desc", "limit": 100}
    if cursor:
        params["cursor"] = cursor
    page = api.get("sales/orders", params=params)
    orders += page["data"]
    cursor = page["next"]
    if not cursor:
        break

# Step 2: revenue and orders by month
revenue: dict[str, float] = defaultdict(float)
count: dict[str, int] = defaultdict(int)
for order in orders:
    month = str(order["ordered_on"])[:7]
    revenue[month] += float(order["amount"])
    count[month] += 1
months = sorted(revenue)
best = max(months, key=lambda month: revenue[month])
total = sum(revenue.values())

# Step 3: the spreadsheet (kept with the run) and the summary in Slack
book = Workbook()
sheet = book.active
assert sheet is not None
sheet.title = "Revenue by month"
sheet.append(["month", "orders", "revenue"])
for month in months:
    sheet.append([month, count[month], round(revenue[month], 2)])
book.save(Path(os.environ["BAY_OUTPUT_DIR"]) / "weekly_report.xlsx")

summary = (
    f"Weekly sales report: {len(orders)} orders, {total:,.2f} in all; "
    f"best month {best} ({revenue[best]:,.2f}). "
    f"The spreadsheet: run {os.environ['BAY_RUN_ID']}, artifact weekly_report.xlsx."
)
api.post("slack/post_message_to_channel", params={"channel_name": "marketing", "message": summary})
print(summary)
