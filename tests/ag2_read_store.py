"""Opens stores that `hubsim serve --store DIR` wrote with ag2 1.2.1's own `Hub.open(
DiskKnowledgeStore(DIR))` and checks that ag2 sees every agent and channel, each WAL whole and
refolded, with tasks, cursors, resumes and skills.

    target/ag2venv/bin/python tests/ag2_read_store.py DIR...
"""
import asyncio, json, sys, os, types
# watchdog (only for DiskKnowledgeStore.on_change) is not installed here: stand-ins for import.
for name in ("watchdog", "watchdog.observers", "watchdog.observers.polling"):
    sys.modules[name] = types.ModuleType(name)
sys.modules["watchdog.observers"].Observer = object
sys.modules["watchdog.observers.polling"].PollingObserver = object
from ag2.knowledge.disk import DiskKnowledgeStore
from ag2.network.hub import Hub

async def main(root):
    hub = await Hub.open(DiskKnowledgeStore(root), ttl_sweep_interval=0, expectation_sweep_interval=0)
    try:
        agents = sorted(hub._passports)
        chans = {}
        for cid in sorted(hub._channels):
            wal = await hub.read_wal(cid)
            chans[cid] = (hub._channels[cid].state.value, len(wal), cid in hub._adapter_states)
        disk_agents = sorted(os.listdir(os.path.join(root, "agents")))
        disk_chans = sorted(os.listdir(os.path.join(root, "channels"))) if os.path.isdir(os.path.join(root, "channels")) else []
        assert agents == disk_agents, (agents, disk_agents)
        assert sorted(chans) == disk_chans, (chans, disk_chans)
        for cid, (_, n, folded) in chans.items():
            lines = open(os.path.join(root, "channels", cid, "wal.jsonl")).read().count("\n") if os.path.exists(os.path.join(root, "channels", cid, "wal.jsonl")) else 0
            assert n == lines, (cid, n, lines)
            assert folded
        tasks = sorted(hub._tasks)
        cursors = {a: dict(c) for a, c in hub._inbox_cursors.items()}
        resumes = {a: r.claimed_capabilities for a, r in hub._resumes.items() if r.claimed_capabilities}
        skills = [a for a in agents if (await hub._store.read(f"/agents/{a}/SKILL.md"))]
        print(os.path.basename(root), "agents", len(agents), "channels", {c[:6]: v for c, v in chans.items()}, "tasks", tasks, "cursors", cursors != {}, "resumes", resumes != {}, "skills", len(skills))
    finally:
        await hub.close()

for root in sys.argv[1:]:
    asyncio.run(main(root))
