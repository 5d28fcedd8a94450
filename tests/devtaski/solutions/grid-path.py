import sys
from collections import deque

data = sys.stdin.read().split()
n, m = int(data[0]), int(data[1])
grid = data[2:2 + n]
start = goal = None
for r in range(n):
    for c in range(m):
        if grid[r][c] == "S":
            start = (r, c)
        elif grid[r][c] == "T":
            goal = (r, c)
dist = {start: 0}
queue = deque([start])
while queue:
    r, c = queue.popleft()
    for nr, nc in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1)):
        if 0 <= nr < n and 0 <= nc < m and grid[nr][nc] != "#" and (nr, nc) not in dist:
            dist[(nr, nc)] = dist[(r, c)] + 1
            queue.append((nr, nc))
print(dist.get(goal, -1))
