"""The article's webhook: answers hello, and shows what it was sent."""

from servicebay.webhook import request, webhook_response

webhook_response.send_response(data={"hello": "world", "you_sent": request.json()})
