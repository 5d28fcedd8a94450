import sys

data = sys.stdin.buffer.read().split()
n, q = int(data[0]), int(data[1])
size = 1
while size < n:
    size *= 2
INF = float("inf")
tree = [INF] * (2 * size)
for i in range(n):
    tree[size + i] = int(data[2 + i])
for i in range(size - 1, 0, -1):
    tree[i] = min(tree[2 * i], tree[2 * i + 1])
out = []
pos = 2 + n
for _ in range(q):
    kind, a, b = int(data[pos]), int(data[pos + 1]), int(data[pos + 2])
    pos += 3
    if kind == 1:
        i = size + a - 1
        tree[i] = b
        i //= 2
        while i:
            tree[i] = min(tree[2 * i], tree[2 * i + 1])
            i //= 2
    else:
        lo, hi, best = a - 1 + size, b + size, INF
        while lo < hi:
            if lo & 1:
                best = min(best, tree[lo])
                lo += 1
            if hi & 1:
                hi -= 1
                best = min(best, tree[hi])
            lo //= 2
            hi //= 2
        out.append(best)
print("\n".join(map(str, out)))
