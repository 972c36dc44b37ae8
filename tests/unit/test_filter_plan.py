from quartz_cluster import limits
from quartz_cluster.node.filter_plan import EXACT, GRAPH, filter_plan


def test_selective_filters_brute_force_broad_ones_walk_the_graph():
    live = 100_000
    assert filter_plan(0, live) == EXACT
    assert filter_plan(int(0.05 * live), live) == EXACT  # the graph would step over 19 of 20 points
    assert filter_plan(int(0.76 * 20_000), 20_000) == GRAPH  # 15k candidates: brute force is 20x slower
    edge = int(limits.GRAPH_FILTER_SELECTIVITY_MIN * live)
    assert filter_plan(edge - 1, live) == EXACT and filter_plan(edge, live) == GRAPH


def test_brute_force_stays_bounded_however_small_the_share():
    live = 10_000_000
    assert filter_plan(limits.EXACT_SEARCH_CANDIDATES_MAX, live) == EXACT
    assert filter_plan(limits.EXACT_SEARCH_CANDIDATES_MAX + 1, live) == GRAPH


def test_a_small_candidate_set_is_always_brute_forced():
    small = limits.EXACT_SEARCH_ALWAYS_CANDIDATES_MAX
    assert filter_plan(3, 10) == EXACT and filter_plan(small, small) == EXACT
    assert filter_plan(small + 1, small + 1) == GRAPH
