def handler(request):
    return "hello world"
