"""Answers a webhook call as the article's scripts do, through the staged SDK."""

from internal_sdk import webhook_response

from servicebay.webhook import request

webhook_response.send_response(
    data={"method": request.method, "name": request.args.get("name"), "body": request.json()},
    status_code=201,
)
