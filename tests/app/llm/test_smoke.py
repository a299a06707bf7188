from .conftest import make_dataset, rows, start, wait_run


def test_generate_then_judge(api, sql, fake):
    dataset_id, prompt_ids = make_dataset(api, sql, n_prompts=5)
    run = start(api, dataset_id, {"kind": "generate", "k": 4})
    run = wait_run(api, run["id"])
    assert run["status"] == "succeeded", run
    assert run["done"] == 5
    comps = rows(sql, "SELECT * FROM completion WHERE run_id = :r", r=run["id"])
    assert len(comps) == 20
    j = start(api, dataset_id, {"kind": "judge", "source_run_id": run["id"]})
    j = wait_run(api, j["id"])
    assert j["status"] == "succeeded", j
    ranks = rows(sql, "SELECT * FROM ranking WHERE run_id = :r", r=j["id"])
    assert len(ranks) == 5
    print(ranks[0])
