import heapq
import sys

data = sys.stdin.read().split()
n, m = int(data[0]), int(data[1])
adj: list[list[tuple[int, int]]] = [[] for _ in range(n + 1)]
for i in range(m):
    a, b, w = int(data[2 + 3 * i]), int(data[3 + 3 * i]), int(data[4 + 3 * i])
    adj[a].append((b, w))
dist = [-1] * (n + 1)
heap = [(0, 1)]
while heap:
    d, u = heapq.heappop(heap)
    if dist[u] != -1:
        continue
    dist[u] = d
    for v, w in adj[u]:
        if dist[v] == -1:
            heapq.heappush(heap, (d + w, v))
print(" ".join(map(str, dist[1:])))
