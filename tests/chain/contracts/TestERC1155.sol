// SPDX-License-Identifier: Apache-2.0
pragma solidity ^0.8.24;

import {ERC1155} from "@openzeppelin/contracts/token/ERC1155/ERC1155.sol";

/// An ERC-1155 collection for the balance-threshold tests: only the deployer mints.
contract TestERC1155 is ERC1155 {
    address public immutable minter;

    error NotMinter(address caller);

    constructor() ERC1155("https://streamgate.invalid/1155/{id}.json") {
        minter = msg.sender;
    }

    /// Mints `amount` of token `id` to `to` (emits TransferSingle from the zero address).
    function mint(address to, uint256 id, uint256 amount) external {
        if (msg.sender != minter) revert NotMinter(msg.sender);
        _mint(to, id, amount, "");
    }
}
