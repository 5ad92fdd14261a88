// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ERC721} from "@openzeppelin/contracts/token/ERC721/ERC721.sol";

/// An ERC-721 collection for the gating tests: only the deployer mints.
contract TestERC721 is ERC721 {
    address public immutable minter;

    error NotMinter(address caller);

    constructor() ERC721("StreamGate Test 721", "SG721") {
        minter = msg.sender;
    }

    /// Mints token `id` to `to`. Unsafe on purpose (no receiver check), so tests can also
    /// give tokens to contracts that do not implement IERC721Receiver.
    function mint(address to, uint256 id) external {
        if (msg.sender != minter) revert NotMinter(msg.sender);
        _mint(to, id);
    }
}
