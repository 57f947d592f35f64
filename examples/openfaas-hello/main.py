def handle(event, context):
    return {
        "statusCode": 200,
        "headers": {"content-type": "text/plain; charset=utf-8"},
        "body": f"hello from {event.method} {event.path}: {event.body.decode() or 'no body'}",
    }
