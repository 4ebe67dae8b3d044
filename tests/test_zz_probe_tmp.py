import time
from tests.conftest import build, fast_config
import tasks
from luigi.execution_summary import LuigiStatusCode

def test_probe(fast_pipeline, tmp_path):
    t=time.time()
    r = build([tasks.IndexDataset()])
    print("index", time.time()-t, r.status)
    t=time.time()
    r = build([tasks.TripletList(epoch=1)])
    print("trip", time.time()-t, r.status)
    print(r.summary_text)
