import sys

PAIRS = {")": "(", "]": "[", "}": "{"}


def balanced(s: str) -> bool:
    stack = []
    for c in s:
        if c in "([{":
            stack.append(c)
        elif not stack or stack.pop() != PAIRS[c]:
            return False
    return not stack


lines = sys.stdin.read().split()
t = int(lines[0])
print("\n".join("YES" if balanced(s) else "NO" for s in lines[1:1 + t]))
