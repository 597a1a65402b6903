"""Two pages meet with fake camera and microphone: the peer connection between them
reaches `connected` and decodes video; one page reloads, takes its seat back (the same
participant id) and media flows again; the server restarts, both pages take their seats
back by themselves, and media never stopped."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from playwright.sync_api import Page, expect

from web._browser import WebSession, peer_stats, sign_in, wait_for
from web._server import OwnServer

#: Whether the page's own microphone track is on.
MIC_ON = "document.querySelector('.tile[data-local] video').srcObject.getAudioTracks()[0].enabled"


def receiving(page: Page) -> int:
    """Frames decoded by the page's newest peer connection, if it is the only connected
    one (0 otherwise): a mesh of two has one peer connection per page."""
    stats = peer_stats(page)
    connected = [frames for state, frames in stats if state == "connected"]
    if len(connected) != 1 or stats[-1][0] != "connected":
        return 0
    return stats[-1][1]


def media_flows(page: Page, who: str) -> None:
    """Waits until the page decodes video, then until it decodes more: frames flow."""
    decodes_beyond(page, 0, f"{who} decodes video")
    decodes_beyond(page, receiving(page), f"{who} keeps decoding video")


def decodes_beyond(page: Page, frames: int, what: str) -> None:
    wait_for(lambda: receiving(page) > frames, what)


def tiles(page: Page) -> list[str]:
    ids: list[str] = page.eval_on_selector_all(".tile", "els => els.map(e => e.dataset.participant)")
    return ids


def test_meeting_media_flows_and_a_reload_rejoins_the_seat(
    web: WebSession, own_server: Callable[..., OwnServer], tenant: str, screenshots: Path
) -> None:
    server = own_server()
    alice = web.page("alice")
    bob = web.page("bob")
    sign_in(alice, server.current.http, "alice", tenant)
    alice.click("#new-meeting")
    expect(alice.locator(".tile[data-local]")).to_have_attribute("data-role", "host")
    link = alice.input_value("#meeting-link")
    assert "#meeting=m-" in link

    sign_in(bob, server.current.http, "bob", tenant, "#" + link.split("#", 1)[1])  # opened from the link
    for page in (alice, bob):
        expect(page.locator(".tile")).to_have_count(2)
        expect(page.locator(".tile:not([data-local])")).to_have_attribute("data-media", "connected")
    media_flows(alice, "alice")
    media_flows(bob, "bob")
    bob_id = bob.get_attribute(".tile[data-local]", "data-participant")
    assert bob_id and bob_id.startswith("p-")
    assert sorted(tiles(alice)) == sorted(tiles(bob))

    # Host controls are Alice's only. She mutes Bob: his microphone goes off; he unmutes.
    expect(bob.locator(".host-controls:visible")).to_have_count(0)
    alice.click(f".tile[data-participant='{bob_id}'] [data-action=mute]")
    expect(bob.locator(".tile[data-local]")).to_have_attribute("data-muted", "true")
    expect(bob.locator("#mic")).to_have_text("Unmute")
    assert bob.evaluate(MIC_ON) is False
    bob.click("#mic")
    expect(alice.locator(f".tile[data-participant='{bob_id}']")).to_have_attribute("data-muted", "false")
    assert bob.evaluate(MIC_ON) is True

    # The reload keeps the tab's sign-in and seat token: Bob rejoins as himself.
    bob.reload()
    expect(bob.locator(".tile[data-local]")).to_have_attribute("data-participant", bob_id)
    expect(bob.locator(".tile")).to_have_count(2)
    bob_tile = alice.locator(f".tile[data-participant='{bob_id}']")
    expect(bob_tile).to_have_count(1)  # the same seat, not a second participant
    expect(bob_tile).to_have_attribute("data-state", "connected")
    expect(alice.locator(".tile")).to_have_count(2)
    media_flows(bob, "bob after his reload")
    media_flows(alice, "alice after bob's reload")
    assert [state for state, _ in peer_stats(alice)] == ["closed", "connected"]  # old one closed

    # Bob's tab goes elsewhere for a while: his seat is held, and his tile says so.
    bob.goto("about:blank")
    expect(bob_tile).to_have_attribute("data-state", "reconnecting")
    expect(bob_tile.locator(".overlay")).to_be_visible()
    bob.goto(link)
    expect(bob.locator(".tile[data-local]")).to_have_attribute("data-participant", bob_id)
    expect(bob_tile).to_have_attribute("data-state", "connected")
    expect(bob_tile.locator(".overlay")).to_be_hidden()
    media_flows(alice, "alice after bob came back")

    # The server restarts: both pages take their seats back by themselves (same ids), and
    # media, which never went through the server, keeps flowing on the same connections.
    roster = sorted(tiles(alice))
    before = [peer_stats(page) for page in (alice, bob)]
    server.kill()
    for page in (alice, bob):
        expect(page.locator("#conn")).not_to_have_attribute("data-state", "open")
    server.start()
    for page in (alice, bob):
        expect(page.locator("#conn")).to_have_attribute("data-state", "open")
        expect(page.locator(".tile[data-state=connected]")).to_have_count(2)
        assert sorted(tiles(page)) == roster
    for page, stats in zip((alice, bob), before, strict=True):
        decodes_beyond(page, stats[-1][1], "video flows on after the restart")
        assert len(peer_stats(page)) == len(stats)  # no peer connection was replaced
    # Both seats are back: Alice is still the host, and each hears of the other's mute.
    expect(alice.locator(".tile[data-local]")).to_have_attribute("data-role", "host")
    alice.click(f".tile[data-participant='{bob_id}'] [data-action=mute]")
    expect(bob.locator("#mic")).to_have_text("Unmute")
    bob.click("#mic")
    expect(bob_tile).to_have_attribute("data-muted", "false")

    path = screenshots / "meeting.png"
    alice.screenshot(path=path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
