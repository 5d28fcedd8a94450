import sys

data = sys.stdin.read().split()
t = int(data[0])
queries = [int(x) for x in data[1:1 + t]]
limit = max(queries + [2])
sieve = bytearray([1]) * (limit + 1)
sieve[0] = sieve[1] = 0
for i in range(2, int(limit ** 0.5) + 1):
    if sieve[i]:
        sieve[i * i::i] = bytearray(len(range(i * i, limit + 1, i)))
count = [0] * (limit + 1)
running = 0
for i in range(limit + 1):
    running += sieve[i]
    count[i] = running
print("\n".join(str(count[n]) for n in queries))
