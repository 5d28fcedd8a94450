import sys

data = sys.stdin.read().split()
t = int(data[0])
print("\n".join("YES" if int(w) % 2 == 0 and int(w) > 2 else "NO" for w in data[1:1 + t]))
