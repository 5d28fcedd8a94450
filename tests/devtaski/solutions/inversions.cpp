#include <iostream>
#include <vector>

// merge sort counting inversions
long long sort_count(std::vector<long long>& a, std::vector<long long>& tmp, int lo, int hi) {
    if (hi - lo < 2) return 0;
    int mid = (lo + hi) / 2;
    long long count = sort_count(a, tmp, lo, mid) + sort_count(a, tmp, mid, hi);
    int i = lo, j = mid, k = lo;
    while (i < mid || j < hi) {
        if (j == hi || (i < mid && a[i] <= a[j])) tmp[k++] = a[i++];
        else { count += mid - i; tmp[k++] = a[j++]; }
    }
    for (int t = lo; t < hi; ++t) a[t] = tmp[t];
    return count;
}

int main() {
    int n;
    std::cin >> n;
    std::vector<long long> a(n), tmp(n);
    for (auto& x : a) std::cin >> x;
    std::cout << sort_count(a, tmp, 0, n) << "\n";
}
