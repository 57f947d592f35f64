hits = 0


def handler(request):
    global hits
    hits += 1
    return {"hits": hits}
