import sys

data = sys.stdin.read().split()
n = int(data[0])
adj: list[list[int]] = [[] for _ in range(n + 1)]
for i in range(n - 1):
    a, b = int(data[1 + 2 * i]), int(data[2 + 2 * i])
    adj[a].append(b)
    adj[b].append(a)
# iterative DFS order from vertex 1, then re-rooting: answer[child] = answer[parent] + n - 2 * size[child]
order, parent = [1], [0] * (n + 1)
parent[1] = -1
for u in order:
    for v in adj[u]:
        if v != parent[u]:
            parent[v] = u
            order.append(v)
size, depth = [1] * (n + 1), [0] * (n + 1)
for u in order[1:]:
    depth[u] = depth[parent[u]] + 1
for u in reversed(order[1:]):
    size[parent[u]] += size[u]
answer = [0] * (n + 1)
answer[1] = sum(depth[1:])
for u in order[1:]:
    answer[u] = answer[parent[u]] + n - 2 * size[u]
print(" ".join(map(str, answer[1:])))
