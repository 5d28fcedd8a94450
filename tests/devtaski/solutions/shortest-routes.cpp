#include <functional>
#include <iostream>
#include <queue>
#include <utility>
#include <vector>

int main() {
    int n, m;
    std::cin >> n >> m;
    std::vector<std::vector<std::pair<int, long long>>> adj(n + 1);
    for (int i = 0; i < m; ++i) {
        int a, b;
        long long w;
        std::cin >> a >> b >> w;
        adj[a].push_back({b, w});
    }
    std::vector<long long> dist(n + 1, -1);
    std::priority_queue<std::pair<long long, int>, std::vector<std::pair<long long, int>>, std::greater<>> heap;
    heap.push({0, 1});
    while (!heap.empty()) {
        auto [d, u] = heap.top();
        heap.pop();
        if (dist[u] != -1) continue;
        dist[u] = d;
        for (auto [v, w] : adj[u]) if (dist[v] == -1) heap.push({d + w, v});
    }
    for (int i = 1; i <= n; ++i) std::cout << dist[i] << (i == n ? "\n" : " ");
}
