"""The demo scenario: a cloud, an edge and the adversary wired together on loopback.

It lives outside the three actors so that none of them imports another.
"""
