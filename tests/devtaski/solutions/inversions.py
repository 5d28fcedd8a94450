import sys

data = sys.stdin.read().split()
n = int(data[0])
values = [int(x) for x in data[1:1 + n]]
rank = {v: i + 1 for i, v in enumerate(sorted(set(values)))}
tree = [0] * (len(rank) + 1)
inversions = 0
for seen, v in enumerate(values):
    r = rank[v]
    # count earlier values <= v, the rest are inversions
    i, not_greater = r, 0
    while i > 0:
        not_greater += tree[i]
        i -= i & -i
    inversions += seen - not_greater
    i = r
    while i < len(tree):
        tree[i] += 1
        i += i & -i
print(inversions)
