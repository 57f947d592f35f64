import json


def handler(event, context):
    params = event.get("queryStringParameters") or {}
    name = params.get("name") or event.get("name") or "world"
    return {
        "statusCode": 200,
        "headers": {"content-type": "application/json"},
        "body": json.dumps({"message": f"hello {name}", "request_id": context.aws_request_id}),
    }
