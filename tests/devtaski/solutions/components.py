import sys

data = sys.stdin.read().split()
n, m = int(data[0]), int(data[1])
parent = list(range(n + 1))


def find(x: int) -> int:
    while parent[x] != x:
        parent[x] = parent[parent[x]]
        x = parent[x]
    return x


components = n
for i in range(m):
    a, b = find(int(data[2 + 2 * i])), find(int(data[3 + 2 * i]))
    if a != b:
        parent[a] = b
        components -= 1
print(components)
