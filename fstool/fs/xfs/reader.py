"""placeholder"""
def probe(region):
    return False
