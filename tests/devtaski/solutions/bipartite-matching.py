import sys

sys.setrecursionlimit(10000)
data = sys.stdin.read().split()
left, right, m = int(data[0]), int(data[1]), int(data[2])
adj: list[list[int]] = [[] for _ in range(left + 1)]
for i in range(m):
    adj[int(data[3 + 2 * i])].append(int(data[4 + 2 * i]))
match_of_right = [0] * (right + 1)


def augment(u: int, visited: list[bool]) -> bool:
    for v in adj[u]:
        if not visited[v]:
            visited[v] = True
            if match_of_right[v] == 0 or augment(match_of_right[v], visited):
                match_of_right[v] = u
                return True
    return False


print(sum(augment(u, [False] * (right + 1)) for u in range(1, left + 1)))
